"""CIDR allow and deny lists, inline or from files that reload themselves.

One :class:`AccessList` compiles the allow and deny networks of one scope (the
whole site, or one route) in a single longest-prefix table, so the most
specific network decides:

- an address inside a deny network and not inside a longer allow network is
  denied;
- when the scope has any allow network, an address that matches none is
  denied too ("only these networks");
- the same network in both lists is denied.

List files hold one network per line (``192.0.2.0/24``, ``2001:db8::/32``
or a bare address); blank lines and ``#`` comments are skipped. A bad line
is skipped and logged with its file and line number on the
``wsgishield.access`` logger. Files are checked on the request path, by one
``stat`` call at most every ``reload_interval`` seconds per process: a
changed file is read and the whole table is swapped in one assignment, so a
request sees the old table or the new one and never a mix. A file that
cannot be read keeps its last good networks.

.. warning::

   A list decides by the client address, which is only as trustworthy as
   the client-address layer makes it: trust forwarding headers from the
   proxies you run and from nothing else. Write list files atomically
   (write a temporary file, then rename it over the old one); a file caught
   half-written is read again on the next check, but only when its size or
   time changed while it was read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from ._fast.cidr import NO_MATCH, PrefixTable, parse_network
from .errors import ConfigurationError
from .networks import PRESETS, expand_presets, load_cloudflare_ranges

__all__ = ["AccessList", "AccessRule", "BadLine", "Verdict"]

logger = logging.getLogger("wsgishield.access")

# Bad lines logged one by one per load of a file; the rest are counted.
MAX_LOGGED_BAD_LINES = 20


class AccessRule(NamedTuple):
    """One allow or deny entry and where it was written."""

    #: ``access.deny[3]`` for an inline entry, ``/etc/deny.txt:17`` for a file line.
    id: str
    #: ``"allow"`` or ``"deny"``.
    action: str
    #: The network as written.
    network: str


class Verdict(NamedTuple):
    """The outcome of one check: allowed or not, and the rule that decided."""

    allowed: bool
    #: The matching rule; ``None`` when no network matched.
    rule: AccessRule | None
    #: The policy key of the list that decided (``access``, ``routes[admin].access``).
    scope: str


class BadLine(NamedTuple):
    """A list-file line that was skipped."""

    path: str
    line: int
    text: str
    reason: str


class _Snapshot(NamedTuple):
    table: PrefixTable
    rules: tuple[AccessRule, ...]
    #: One verdict per rule, built with the table so a check allocates nothing.
    verdicts: tuple[Verdict, ...]
    no_match: Verdict


class _ListFile:
    """One list file and the networks of its last good read."""

    __slots__ = ("action", "bad_lines", "entries", "path", "signature")

    def __init__(self, path: str, action: str) -> None:
        self.path = path
        self.action = action
        self.signature: tuple[int, int, int] | None = None
        self.entries: list[tuple[AccessRule, tuple[int, int, int]]] = []
        self.bad_lines: list[BadLine] = []

    def stat(self) -> tuple[int, int, int]:
        result = os.stat(self.path)
        return (result.st_mtime_ns, result.st_size, result.st_ino)

    # NOTE: a reload runs on the request that notices the change, so that
    # request pays for parsing the whole file (about 90 ms per 100,000 lines
    # with the compiled kernel).
    def load(self) -> bool:
        """Read the file again; return ``False`` when it changed while being read.

        Raises ``OSError`` or ``UnicodeDecodeError`` when it cannot be read.
        """
        before = self.stat()
        entries = []
        bad_lines = []
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                try:
                    network = parse_network(text)
                except ValueError as exc:
                    bad_lines.append(BadLine(self.path, number, text[:80], str(exc)))
                    continue
                rule = AccessRule(f"{self.path}:{number}", self.action, text)
                entries.append((rule, network))
        if self.stat() != before:
            return False
        self.signature = before
        self.entries = entries
        self.bad_lines = bad_lines
        return True


class AccessList:
    """The allow and deny networks of one scope, compiled into one table.

    ``allow`` and ``deny`` are networks or the presets ``loopback``,
    ``private`` and ``cloudflare``; ``key`` is the policy path used in rule
    ids and errors. A bad inline network or a list file that cannot be read
    at start-up raises :class:`~wsgishield.errors.ConfigurationError`.
    """

    def __init__(
        self,
        *,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        allow_files: Sequence[str] = (),
        deny_files: Sequence[str] = (),
        reload_interval: float = 1.0,
        key: str = "access",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if reload_interval <= 0:
            raise ConfigurationError(
                f"{key}.reload_interval", reload_interval, "expected a positive number"
            )
        self.key = key
        self.reload_interval = reload_interval
        self._clock = clock
        self._inline_deny = _inline_entries(f"{key}.deny", "deny", deny)
        self._inline_allow = _inline_entries(f"{key}.allow", "allow", allow)
        self._files = [
            *(_ListFile(path, "deny") for path in deny_files),
            *(_ListFile(path, "allow") for path in allow_files),
        ]
        self._has_allow = bool(allow or allow_files)
        for list_file in self._files:
            _load_at_start(key, list_file)

        self._lock = threading.Lock()
        self._next_check = clock() + reload_interval
        self._snapshot = self._compile()

    @property
    def bad_lines(self) -> list[BadLine]:
        """The lines skipped in the last good read of every list file."""
        return [bad for list_file in self._files for bad in list_file.bad_lines]

    @property
    def rules(self) -> tuple[AccessRule, ...]:
        """Every rule of the current table, deny rules first."""
        return self._snapshot.rules

    def __len__(self) -> int:
        return len(self._snapshot.rules)

    def check(self, version: int, value: int) -> Verdict:
        """Decide whether the address ``(version, value)`` may pass."""
        if self._files and self._clock() >= self._next_check:
            self._reload()
        snapshot = self._snapshot
        index: int = snapshot.table.lookup(version, value)
        if index == NO_MATCH:
            return snapshot.no_match
        return snapshot.verdicts[index]

    def _compile(self) -> _Snapshot:
        rules: list[AccessRule] = []
        networks = []
        # Every deny entry goes before every allow entry: for the same network
        # in both lists the first one listed keeps it, so deny wins.
        deny_files = [f.entries for f in self._files if f.action == "deny"]
        allow_files = [f.entries for f in self._files if f.action == "allow"]
        sources = [self._inline_deny, *deny_files, self._inline_allow, *allow_files]
        for entries in sources:
            for rule, network in entries:
                networks.append((*network, len(rules)))
                rules.append(rule)
        verdicts = tuple(
            Verdict(rule.action == "allow", rule, self.key) for rule in rules
        )
        no_match = Verdict(not self._has_allow, None, self.key)
        return _Snapshot(PrefixTable(networks), tuple(rules), verdicts, no_match)

    def _reload(self) -> None:
        """Read the list files that changed and swap in a new table."""
        # One thread reloads while the others go on with the current table.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = self._clock() + self.reload_interval
            changed = False
            for list_file in self._files:
                changed = _reload_file(list_file) or changed
            if changed:
                self._snapshot = self._compile()
                logger.info(
                    "access list %s reloaded: %d networks",
                    self.key,
                    len(self._snapshot.rules),
                )
        finally:
            self._lock.release()


def _load_at_start(key: str, list_file: _ListFile) -> None:
    name = f"{key}.{list_file.action}_files"
    try:
        # A file being written while it is read is read again, a few times.
        loaded = any(list_file.load() for _ in range(3))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(name, list_file.path, f"cannot read: {exc}") from exc
    if not loaded:
        raise ConfigurationError(name, list_file.path, "changed during every read")
    _log_bad_lines(list_file.bad_lines)


def _reload_file(list_file: _ListFile) -> bool:
    """Reload one file if it changed; return whether its networks changed."""
    try:
        if list_file.stat() == list_file.signature:
            return False
        if not list_file.load():
            # Caught while being written; the next check reads it again.
            return False
    except (OSError, UnicodeDecodeError) as exc:
        if list_file.signature is not None:
            logger.error(
                "access list file %s failed to load, keeping its last good "
                "networks: %s",
                list_file.path,
                exc,
            )
            # Log a failing file once, not at every check.
            list_file.signature = None
        return False
    _log_bad_lines(list_file.bad_lines)
    return True


def _inline_entries(
    key: str, action: str, entries: Iterable[str]
) -> list[tuple[AccessRule, tuple[int, int, int]]]:
    parsed = []
    for index, entry in enumerate(entries):
        if entry in PRESETS or entry == "cloudflare":
            networks = expand_presets([entry], load_cloudflare_ranges())
        else:
            networks = [entry]
        for text in networks:
            try:
                network = parse_network(text.strip())
            except ValueError as exc:
                raise ConfigurationError(f"{key}[{index}]", entry, str(exc)) from exc
            parsed.append((AccessRule(f"{key}[{index}]", action, text), network))
    return parsed


def _log_bad_lines(bad_lines: Sequence[BadLine]) -> None:
    for bad in bad_lines[:MAX_LOGGED_BAD_LINES]:
        logger.warning(
            "skipped line %s:%d %r: %s", bad.path, bad.line, bad.text, bad.reason
        )
    if len(bad_lines) > MAX_LOGGED_BAD_LINES:
        logger.warning(
            "skipped %d more bad lines in %s",
            len(bad_lines) - MAX_LOGGED_BAD_LINES,
            bad_lines[0].path,
        )
