"""Prometheus metrics with bounded labels, cheap enough for every request.

Every layer counts what it decides through the families defined at the end
of this module. A layer turns the label sets it uses into slots once, in its
constructor, so an event on the request path only adds to a slot::

    from wsgishield import metrics

    failures = metrics.Counts(registry.jwt_failures, ["expired", "revoked"])
    failures.inc("expired")

Label values are bounded in three ways, because one scanner must not be able
to create a series per request:

- labels with a known vocabulary (HTTP method, status class, decision) map
  every other value to ``other``;
- free-form values (reasons, rule ids) that are not 1 to 64 characters of
  ``[A-Za-z0-9_.:-]`` become ``other``;
- the registry keeps at most ``max_series`` label sets in each process; a new
  label set beyond that is dropped and counted in
  ``wsgishield_metrics_series_dropped_total{metric}``.

Values live in this process. When ``PROMETHEUS_MULTIPROC_DIR`` is set at the
first write, each value is also written to a memory-mapped file in that
directory, in the file format of prometheus-client's multiprocess mode, so
``MultiProcessCollector`` (and :func:`exposition`) sums every worker. The
files of a worker that exited are merged into per-type archive files by
:func:`archive_dead_process` (``wsgishield.gunicorn`` calls it from
``child_exit``), so the file count and the scrape time stay bounded however
often Gunicorn recycles workers, and no counter goes backwards.

This module never imports WSGI code; prometheus-client is only imported to
render an exposition.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import struct
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._fast._tally_common import HTTP_METHODS, OTHER, UNMATCHED_ROUTE
from ._fast._tally_common import STATUS_CLASSES as _STATUS_CLASS_LABELS
from .multiprocess import (
    MULTIPROC_ENV,
    MappedFile,
    archive_dead_process,
    archive_lock,
    multiprocess_file_count,
    prepare_multiprocess_directory,
    read_multiprocess_file,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "HTTP_METHODS",
    "MULTIPROC_ENV",
    "OTHER",
    "REGISTRY",
    "STATUS_CLASSES",
    "UNMATCHED_ROUTE",
    "Counts",
    "Family",
    "MetricsRegistry",
    "archive_dead_process",
    "bounded_label",
    "exposition",
    "method_label",
    "multiprocess_file_count",
    "prepare_multiprocess_directory",
    "read_multiprocess_file",
    "scrape_registry",
    "start_exposition_server",
    "status_class",
]

#: Label sets per process across all families. A route table of 50 rules
#: with every method, status class and decision in use stays far below it.
DEFAULT_MAX_SERIES = 5000

#: Request latency buckets in seconds: 1 ms to 10 s, denser around the
#: 25-500 ms range where API latency objectives usually sit.
DEFAULT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: First digit of a status code to its class label.
STATUS_CLASSES = {label[0]: label for label in _STATUS_CLASS_LABELS}
_FREE_LABEL_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
)
_MAX_FREE_LABEL = 64


def method_label(method: str) -> str:
    """Return ``method`` when it is a standard HTTP method, else ``other``."""
    return method if method in HTTP_METHODS else OTHER


def status_class(status: str | int) -> str:
    """Return ``"2xx"`` for a status code or WSGI status line, else ``other``."""
    text = str(status)
    if len(text) < 3 or not text[:3].isdigit():
        return OTHER
    return STATUS_CLASSES.get(text[0], OTHER)


def bounded_label(value: object) -> str:
    """Return ``value`` as a label when it is a short identifier, else ``other``."""
    text = value if isinstance(value, str) else str(value)
    if text == UNMATCHED_ROUTE:
        return text
    if not 0 < len(text) <= _MAX_FREE_LABEL:
        return OTHER
    if not _FREE_LABEL_CHARACTERS.issuperset(text):
        return OTHER
    return text


# --- Per-process value storage --------------------------------------------

logger = logging.getLogger("wsgishield.metrics")

# A value is the first 8 bytes of its entry in a multiprocess file; the
# timestamp after it stays 0.0 for every family kind written here.
_pack_double = struct.Struct("d").pack


#: Seconds between two writes of a process's values to its multiprocess
#: files. A scrape may miss at most this much of another worker's traffic;
#: Prometheus scrapes every 15 s or more, so one second is invisible there.
FLUSH_INTERVAL = 1.0


class _ProcessStore:
    """The values of one process, copied to mmap files in multiprocess mode.

    Slots are indices handed out by the registry; each has a file prefix
    (``counter``, ``gauge_livesum``...) and a prometheus-client key. A
    request only updates floats in a list. In multiprocess mode a daemon
    thread, started with the store (on first use in the process, so after
    Gunicorn's fork), writes the values that changed every
    :data:`FLUSH_INTERVAL` seconds, and once more at interpreter exit.
    """

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        self.pid = os.getpid()
        # Guards the values: without it two threads of a gthread worker
        # could lose an increment.
        self.lock = threading.Lock()
        self.values: list[float] = [0.0] * len(registry.slots)
        self.directory = os.environ.get(MULTIPROC_ENV) or None

        # The rest belongs to flush(), under its own lock.
        self._flush_lock = threading.Lock()
        self.files: dict[str, MappedFile] = {}
        # Per slot: (file, offset of the value) once in this process's file,
        # what an earlier process with the same pid left there, and the last
        # value written (NaN: not yet).
        self.positions: list[tuple[MappedFile, int] | None] = []
        self.bases: list[float] = []
        self.written: list[float] = []
        if self.directory is not None:
            atexit.register(self._flush_logging_errors)
            threading.Thread(
                target=self._flush_periodically, name="wsgishield-metrics", daemon=True
            ).start()

    def grow(self, count: int) -> None:
        missing = count - len(self.values)
        if missing > 0:
            self.values.extend([0.0] * missing)

    # acquire/release is cheaper than ``with`` on the request path.

    def add(self, slot: int, amount: float) -> None:
        self.lock.acquire()
        try:
            self.values[slot] += amount
        finally:
            self.lock.release()

    def set(self, slot: int, value: float) -> None:
        self.values[slot] = value

    def observe(self, histogram: int, bounds: Sequence[float], value: float) -> None:
        bucket = histogram + 1 + bisect_left(bounds, value)
        self.lock.acquire()
        try:
            values = self.values
            values[histogram] += value
            values[bucket] += 1.0
        finally:
            self.lock.release()

    def flush(self) -> None:
        """Write every value that changed since the last flush to the files."""
        if self.directory is None or os.getpid() != self.pid:
            # A forked child inherits the parent's store and its atexit
            # entry; the parent's files are not the child's to write.
            return
        with self._flush_lock:
            with self.lock:
                snapshot = self.values[:]
            missing = len(snapshot) - len(self.written)
            if missing > 0:
                self.positions.extend([None] * missing)
                self.bases.extend([0.0] * missing)
                self.written.extend([math.nan] * missing)
            written = self.written
            for slot, value in enumerate(snapshot):
                # NaN never equals itself, so a new slot is always written.
                if value == written[slot]:
                    continue
                position = self.positions[slot] or self._place(slot)
                mapped, offset = position
                # Only the value changes; the timestamp after it stays 0.0.
                mapped.map[offset : offset + 8] = _pack_double(value + self.bases[slot])
                written[slot] = value

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self._flush_logging_errors()

    def _flush_logging_errors(self) -> None:
        # A full disk or a removed directory must not kill the thread or
        # the exit; the values stay in memory for the next attempt.
        try:
            self.flush()
        except (OSError, ValueError):
            logger.exception("writing metrics to %s failed", self.directory)

    def _place(self, slot: int) -> tuple[MappedFile, int]:
        prefix, key = self.registry.slots[slot]
        mapped = self.files.get(prefix)
        if mapped is None:
            assert self.directory is not None
            # The registry's tag follows the pid ("counter_12-wsgishield.db"),
            # so these files never collide with the ones prometheus-client
            # writes for the application's own metrics ("counter_12.db").
            name = f"{prefix}_{self.pid}-{self.registry.file_tag}.db"
            mapped = self.files[prefix] = MappedFile(os.path.join(self.directory, name))
        found = mapped.existing.pop(key, None)
        if found is None:
            position = (mapped, mapped.append(key, 0.0))
        else:
            self.bases[slot] = found[0]
            position = (mapped, found[1])
        self.positions[slot] = position
        return position

    def close(self) -> None:
        self.flush()
        with self._flush_lock:
            for mapped in self.files.values():
                mapped.close()
            self.files.clear()
            self.positions = [None] * len(self.positions)


# --- Families and the registry ---------------------------------------------

_registries: weakref.WeakSet[MetricsRegistry] = weakref.WeakSet()
_registry_numbers = itertools.count(1)


def _format_bound(bound: float) -> str:
    # The text prometheus-client writes for a bucket bound ("0.005", "1.0",
    # "+Inf"); like Go, it switches to an exponent above 7 integer digits.
    if math.isinf(bound):
        return "+Inf"
    text = repr(float(bound))
    dot = text.find(".")
    if bound > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


class Family:
    """One metric: a name, its label names and its label sets.

    ``vocabularies`` maps a label name to the values it may take; any other
    value becomes ``other``. Labels without a vocabulary go through
    :func:`bounded_label`.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        name: str,
        documentation: str,
        kind: str,
        labelnames: Sequence[str],
        *,
        vocabularies: dict[str, Iterable[str]] | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        multiprocess_mode: str = "",
    ) -> None:
        self.registry = registry
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labelnames = tuple(labelnames)
        self.multiprocess_mode = multiprocess_mode
        self.bounds = (*sorted(float(bound) for bound in buckets), math.inf)
        vocabularies = vocabularies or {}
        self._vocabularies = tuple(
            frozenset(vocabularies[label]) if label in vocabularies else None
            for label in self.labelnames
        )
        self._series: dict[tuple[str, ...], int] = {}
        self.capped = True

    @property
    def file_prefix(self) -> str:
        if self.kind == "gauge":
            return f"gauge_{self.multiprocess_mode}"
        return self.kind

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name

    def clean(self, values: Sequence[object]) -> tuple[str, ...]:
        """Map label values onto their bounded form."""
        cleaned = []
        for value, vocabulary in zip(values, self._vocabularies, strict=True):
            if vocabulary is None:
                cleaned.append(bounded_label(value))
            else:
                known = isinstance(value, str) and value in vocabulary
                cleaned.append(value if known else OTHER)  # type: ignore[arg-type]
        return tuple(cleaned)

    def slot(self, *values: object) -> int | None:
        """Return the first slot of a label set, or ``None`` when it was dropped."""
        try:
            return self._series[values]  # type: ignore[index]
        except (KeyError, TypeError):
            # TypeError: an unhashable value, which clean() turns into text.
            pass
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {self.labelnames}, got {values!r}"
            )
        cleaned = self.clean(values)
        slot = self._series.get(cleaned)
        if slot is None:
            slot = self.registry._add_series(self, cleaned)
        return slot

    def inc(self, *values: object, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter or gauge."""
        slot = self.slot(*values)
        if slot is not None:
            self.registry.store.add(slot, amount)

    def dec(self, *values: object, amount: float = 1.0) -> None:
        """Subtract ``amount`` from a gauge."""
        self.inc(*values, amount=-amount)

    def set(self, *values: object, value: float) -> None:
        """Set a gauge."""
        slot = self.slot(*values)
        if slot is not None:
            self.registry.store.set(slot, value)

    def observe(self, *values: object, value: float) -> None:
        """Observe one value of a histogram."""
        slot = self.slot(*values)
        if slot is None:
            return
        self.registry.store.observe(slot, self.bounds, value)

    def keys(self, labelvalues: tuple[str, ...]) -> list[str]:
        """Build the multiprocess file keys of a label set, in slot order."""
        labels = dict(zip(self.labelnames, labelvalues, strict=True))

        def key(sample: str, extra: dict[str, str] | None = None) -> str:
            return json.dumps(
                [self.name, sample, {**labels, **(extra or {})}, self.documentation],
                sort_keys=True,
            )

        if self.kind != "histogram":
            return [key(self.sample_name)]
        return [key(self.name + "_sum")] + [
            key(self.name + "_bucket", {"le": _format_bound(bound)})
            for bound in self.bounds
        ]

    def series(self) -> dict[tuple[str, ...], int]:
        """Return the label sets created so far, with their first slot."""
        return dict(self._series)


class Counts:
    """The slots of one counter family for label sets known in advance.

    A layer builds one in its constructor and calls :meth:`inc` on the
    request path, which finds the slot in a dict and adds to it under the
    store lock: no label cleaning, no tuple building. ``labels`` turns a key
    into its label values; by default a tuple key is the label values and
    any other key the one label value. A key that was not given at start is
    looked up through the family once (so its labels are bounded the same
    way) and remembered, up to :data:`_MAX_LATE_KEYS` such keys.
    """

    __slots__ = ("_labels", "_late", "_registry", "_slots", "family")

    def __init__(
        self,
        family: Family,
        keys: Iterable[Hashable] = (),
        labels: Callable[[Any], Sequence[object]] | None = None,
    ) -> None:
        self.family = family
        self._registry = family.registry
        self._labels = labels or _key_labels
        self._slots: dict[Hashable, int | None] = {
            key: family.slot(*self._labels(key)) for key in keys
        }
        self._late = 0

    def inc(self, key: Hashable, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of ``key``."""
        try:
            slot = self._slots[key]
        except KeyError:
            slot = self._late_slot(key)
        if slot is None:
            return
        # _ProcessStore.add() written out: the call costs a third of an event.
        registry = self._registry
        store = registry._store or registry.store
        lock = store.lock
        lock.acquire()
        try:
            store.values[slot] += amount
        finally:
            lock.release()

    def _late_slot(self, key: Hashable) -> int | None:
        slot = self.family.slot(*self._labels(key))
        if self._late < _MAX_LATE_KEYS:
            self._late += 1
            self._slots[key] = slot
        return slot


#: Keys a :class:`Counts` remembers beyond those given at start. Keys come
#: from code and policy, so this only guards against a caller's mistake.
_MAX_LATE_KEYS = 256


def _key_labels(key: Any) -> Sequence[object]:
    return key if isinstance(key, tuple) else (key,)


class MetricsRegistry:
    """All families, their label sets and the values of this process.

    ``file_tag`` names this registry's multiprocess files; two registries
    that write in one process need different tags.
    """

    http_requests: Family
    http_request_duration: Family
    http_in_flight: Family
    decisions_total: Family
    ratelimit_decisions: Family
    store_errors: Family
    breaker_state: Family
    breaker_transitions: Family
    cache_lookups: Family
    access_denials: Family
    ban_strikes: Family
    bans: Family
    jwt_failures: Family
    jwks_fetches: Family
    client_address_fallbacks: Family
    events: Family
    events_suppressed: Family

    def __init__(
        self, max_series: int = DEFAULT_MAX_SERIES, *, file_tag: str | None = None
    ) -> None:
        _registries.add(self)
        self.max_series = max_series
        self.file_tag = file_tag or f"wsgishield{next(_registry_numbers)}"
        self.families: dict[str, Family] = {}
        # (file prefix, key) per slot, and (first slot, slot count) of the
        # series each slot belongs to; shared by every process after a fork.
        self.slots: list[tuple[str, str]] = []
        self.series_of_slot: list[tuple[int, int]] = []
        self.series_count = 0
        self._lock = threading.Lock()
        self._store: _ProcessStore | None = None
        self.dropped = self.counter(
            "wsgishield_metrics_series_dropped",
            "Label sets not recorded because the series cap was reached.",
            ["metric"],
        )
        self.dropped.capped = False
        _define_standard_families(self)

    @property
    def store(self) -> _ProcessStore:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = _ProcessStore(self)
                store = self._store
        return store

    def flush(self) -> None:
        """Write this process's changed values to its multiprocess files now."""
        store = self._store
        if store is not None:
            store.flush()

    def reset_after_fork(self) -> None:
        """Start from zero in a forked child: its parent's values are the parent's."""
        self._lock = threading.Lock()
        self._store = None

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str], **options: Any
    ) -> Family:
        return self._register(
            Family(self, name, documentation, "counter", labelnames, **options)
        )

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        multiprocess_mode: str,
        **options: Any,
    ) -> Family:
        return self._register(
            Family(
                self,
                name,
                documentation,
                "gauge",
                labelnames,
                multiprocess_mode=multiprocess_mode,
                **options,
            )
        )

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], **options: Any
    ) -> Family:
        return self._register(
            Family(self, name, documentation, "histogram", labelnames, **options)
        )

    def _register(self, family: Family) -> Family:
        if family.name in self.families:
            raise ValueError(f"metric {family.name} is already registered")
        self.families[family.name] = family
        return family

    def _add_series(self, family: Family, labelvalues: tuple[str, ...]) -> int | None:
        with self._lock:
            slot = family._series.get(labelvalues)
            if slot is not None:
                return slot
            full = family.capped and self.series_count >= self.max_series
            if not full:
                slot = len(self.slots)
                keys = family.keys(labelvalues)
                self.slots.extend((family.file_prefix, key) for key in keys)
                self.series_of_slot.extend([(slot, len(keys))] * len(keys))
                self.series_count += family.capped
                store = self._store
                if store is not None:
                    with store.lock:
                        store.grow(len(self.slots))
                # Published last, so no other thread reads a slot before it exists.
                family._series[labelvalues] = slot
        if full:
            self.dropped.inc(family.name)
        return slot

    def value(self, family: Family, *labelvalues: object, sample: str = "") -> float:
        """Return this process's value of one series (tests and ``explain``)."""
        slot = family.slot(*labelvalues)
        if slot is None:
            return 0.0
        values = self.store.values
        if family.kind != "histogram" or sample == "_sum":
            return values[slot] if slot < len(values) else 0.0
        count = len(family.bounds)
        return sum(values[slot + 1 : slot + 1 + count])

    def collect(self) -> Iterator[Any]:
        """Yield prometheus-client metric families for this process's values."""
        from prometheus_client.metrics_core import Metric

        store = self.store
        values = store.values
        for family in list(self.families.values()):
            series = family.series()
            if not series:
                continue
            metric = Metric(family.name, family.documentation, family.kind)
            for labelvalues, slot in series.items():
                labels = dict(zip(family.labelnames, labelvalues, strict=True))
                if family.kind != "histogram":
                    metric.add_sample(family.sample_name, labels, values[slot])
                    continue
                cumulative = 0.0
                for index, bound in enumerate(family.bounds):
                    cumulative += values[slot + 1 + index]
                    metric.add_sample(
                        family.name + "_bucket",
                        {**labels, "le": _format_bound(bound)},
                        cumulative,
                    )
                metric.add_sample(family.name + "_count", labels, cumulative)
                metric.add_sample(family.name + "_sum", labels, values[slot])
            yield metric


# --- Exposition --------------------------------------------------------------


def exposition(
    accept: str | None = None,
    registry: MetricsRegistry | None = None,
    *,
    include_default: bool = True,
) -> tuple[bytes, str]:
    """Render every metric for a scrape; return the body and its content type.

    In multiprocess mode the values of all processes come from the files in
    ``PROMETHEUS_MULTIPROC_DIR`` (which also hold the application's own
    prometheus-client metrics). Otherwise this process's families are
    rendered, with prometheus-client's default registry when
    ``include_default`` is true. ``accept`` selects OpenMetrics or the
    Prometheus text format, as the ``Accept`` header of a scrape does.
    """
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(
        scrape_registry(registry, include_default=include_default)
    ), content_type


def scrape_registry(
    registry: MetricsRegistry | None = None, *, include_default: bool = True
) -> Any:
    """Return a prometheus-client ``CollectorRegistry`` that renders what
    :func:`exposition` renders, for prometheus-client's own servers."""
    from prometheus_client import REGISTRY as DEFAULT_REGISTRY
    from prometheus_client import CollectorRegistry

    collected = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        # This process's own values are written now, the other processes'
        # at most FLUSH_INTERVAL ago.
        (registry or REGISTRY).flush()
        collected.register(_LockedMultiProcessCollector(Path(directory)))
        return collected
    collected.register(_RegistryCollector(registry or REGISTRY))
    if include_default:
        collected.register(_RegistryCollector(DEFAULT_REGISTRY))
    return collected


def start_exposition_server(port: int, address: str = "127.0.0.1") -> Any:
    """Serve scrapes on ``address:port`` from a thread of this process.

    ``wsgishield.gunicorn`` calls it in the Gunicorn master, which serves
    the merged values of every worker in multiprocess mode. Returns the
    server; ``server.shutdown()`` stops it.
    """
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, address, registry=scrape_registry())
    return server


class _RegistryCollector:
    """Collect another registry (ours, or a prometheus-client one) as one collector."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        return iter(self.registry.collect())


class _LockedMultiProcessCollector:
    """prometheus-client's multiprocess collector, read under the archive lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        with archive_lock(self.directory, exclusive=False):
            files = [str(path) for path in self.directory.glob("*.db")]
            merged = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
            metrics = list(merged)
        return iter(metrics)


# --- The families every layer uses -----------------------------------------

#: Values of the ``decision`` label: "allowed" or a layer's action.
DECISIONS = (
    "allowed",
    "denied-cidr",
    "banned",
    "invalid",
    "auth-failed",
    "rate-limited",
    "cached",
    "unavailable",
)


def _define_standard_families(registry: MetricsRegistry) -> None:
    registry.http_requests = registry.counter(
        "wsgishield_http_requests",
        "Requests by route rule, method, status class and shield decision.",
        ["route", "method", "status_class", "decision"],
        vocabularies={"decision": DECISIONS},
    )
    registry.http_request_duration = registry.histogram(
        "wsgishield_http_request_duration_seconds",
        "Time from the shield receiving a request to the app returning its body.",
        ["route", "method", "status_class", "decision"],
        vocabularies={"decision": DECISIONS},
    )
    registry.http_in_flight = registry.gauge(
        "wsgishield_http_requests_in_flight",
        "Requests inside the shield right now.",
        [],
        multiprocess_mode="livesum",
    )
    registry.decisions_total = registry.counter(
        "wsgishield_decisions",
        "Requests a layer answered itself, by layer, action, reason and rule.",
        ["layer", "action", "reason", "rule"],
        vocabularies={"action": DECISIONS},
    )
    registry.ratelimit_decisions = registry.counter(
        "wsgishield_ratelimit_decisions",
        "Rate-limit checks by rule and result (allowed, limited, shadow-limited).",
        ["rule", "result"],
        vocabularies={"result": ("allowed", "limited", "shadow-limited")},
    )
    registry.store_errors = registry.counter(
        "wsgishield_store_errors",
        "Failed shared-store operations by store and error kind.",
        ["store", "error"],
    )
    registry.breaker_state = registry.gauge(
        "wsgishield_breaker_state",
        "Circuit breaker state per store: 0 closed, 1 half-open, 2 open.",
        ["store"],
        multiprocess_mode="livemax",
    )
    registry.breaker_transitions = registry.counter(
        "wsgishield_breaker_transitions",
        "Circuit breaker state changes by store and new state.",
        ["store", "state"],
        vocabularies={"state": ("closed", "half-open", "open")},
    )
    registry.cache_lookups = registry.counter(
        "wsgishield_cache_lookups",
        "Response cache lookups by route, result and reason.",
        ["route", "result", "reason"],
        vocabularies={"result": ("hit", "miss", "stale", "bypass")},
    )
    registry.access_denials = registry.counter(
        "wsgishield_access_denials",
        "Requests denied by an access list, by list and reason.",
        ["list", "reason"],
        vocabularies={"reason": ("deny-list", "not-allowed")},
    )
    registry.ban_strikes = registry.counter(
        "wsgishield_ban_strikes",
        "Strikes counted towards bans, by reason (trap-path, status-NNN).",
        ["reason"],
    )
    registry.bans = registry.counter(
        "wsgishield_bans",
        "Bans started in this process.",
        [],
    )
    registry.jwt_failures = registry.counter(
        "wsgishield_jwt_failures",
        "Rejected tokens by reason.",
        ["reason"],
    )
    registry.jwks_fetches = registry.counter(
        "wsgishield_jwks_fetches",
        "Key set fetches by result (success, error, timeout, invalid).",
        ["result"],
        vocabularies={"result": ("success", "error", "timeout", "invalid")},
    )
    registry.client_address_fallbacks = registry.counter(
        "wsgishield_client_address_fallbacks",
        "Requests from a trusted proxy whose forwarding header was not usable.",
        ["reason"],
        vocabularies={"reason": ("missing", "invalid", "short-chain")},
    )
    registry.events = registry.counter(
        "wsgishield_events",
        "Security events logged, by logger kind and action.",
        ["kind", "action"],
    )
    registry.events_suppressed = registry.counter(
        "wsgishield_events_suppressed",
        "Security events not logged because their key exceeded its rate.",
        ["kind", "action"],
    )


#: The registry of the process; the module-level families below belong to it.
REGISTRY = MetricsRegistry(file_tag="wsgishield")

HTTP_REQUESTS = REGISTRY.http_requests
HTTP_REQUEST_DURATION = REGISTRY.http_request_duration
HTTP_IN_FLIGHT = REGISTRY.http_in_flight
DECISIONS_TOTAL = REGISTRY.decisions_total
RATELIMIT_DECISIONS = REGISTRY.ratelimit_decisions
STORE_ERRORS = REGISTRY.store_errors
BREAKER_STATE = REGISTRY.breaker_state
BREAKER_TRANSITIONS = REGISTRY.breaker_transitions
CACHE_LOOKUPS = REGISTRY.cache_lookups
ACCESS_DENIALS = REGISTRY.access_denials
BAN_STRIKES = REGISTRY.ban_strikes
BANS = REGISTRY.bans
JWT_FAILURES = REGISTRY.jwt_failures
JWKS_FETCHES = REGISTRY.jwks_fetches
CLIENT_ADDRESS_FALLBACKS = REGISTRY.client_address_fallbacks
EVENTS = REGISTRY.events
EVENTS_SUPPRESSED = REGISTRY.events_suppressed


def _reset_after_fork() -> None:
    for registry in list(_registries):
        registry.reset_after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
