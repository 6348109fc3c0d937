"""The ``wsgishield`` command line.

::

    wsgishield check POLICY
    wsgishield explain POLICY METHOD PATH [--peer IP] [--header 'K: V' ...]
    wsgishield refresh-cloudflare IPS_V4 IPS_V6 [--output PATH]

``check`` validates a policy and prints what it compiles to. ``explain`` runs
one synthetic request through a shield built from the policy, in this
process and with its own in-memory state, and prints the client address the
shield resolves, the route that matches and the decision of each layer.
``refresh-cloudflare`` replaces the Cloudflare range snapshot with copies of
the published lists that you downloaded.

Exit status: 0 on success, 2 for an invalid policy or arguments.
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from . import __version__, context
from ._fast import HAS_EXTENSIONS
from .client import MIN_CLOUDFLARE_PREFIX_V4, MIN_CLOUDFLARE_PREFIX_V6
from .errors import ConfigurationError
from .networks import parse_network
from .shield import Shield

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = stdout or sys.stdout
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        result: int = arguments.command(arguments, out)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (such as `head`) closed the pipe: not an error of ours.
        sys.stderr.close()
        return 0
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgishield", description="Validate and explain wsgishield policies."
    )
    parser.add_argument(
        "--version", action="version", version=f"wsgishield {__version__}"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a policy and print its rules")
    check.add_argument("policy", help="path of the policy TOML file")
    check.set_defaults(command=_check)

    explain = commands.add_parser(
        "explain", help="show what the shield decides for one request"
    )
    explain.add_argument("policy", help="path of the policy TOML file")
    explain.add_argument("method", help="HTTP method, such as GET")
    explain.add_argument("path", help="request path, with an optional ?query")
    explain.add_argument(
        "--peer",
        default="127.0.0.1",
        help="address of the immediate peer (REMOTE_ADDR)",
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header; repeat for several",
    )
    explain.add_argument(
        "--scheme", default="http", choices=("http", "https"), help="wsgi.url_scheme"
    )
    explain.add_argument(
        "--data",
        metavar="TEXT",
        help="request body, sent as UTF-8 with its Content-Length; set the "
        "Content-Type with --header",
    )
    explain.set_defaults(command=_explain)

    refresh = commands.add_parser(
        "refresh-cloudflare",
        help="replace the Cloudflare range snapshot from downloaded lists",
    )
    refresh.add_argument("ips_v4", help="a copy of https://www.cloudflare.com/ips-v4")
    refresh.add_argument("ips_v6", help="a copy of https://www.cloudflare.com/ips-v6")
    refresh.add_argument(
        "--output",
        help="file to write (default: the snapshot inside the installed package); "
        "point client.cloudflare_ranges at it if it lies elsewhere",
    )
    refresh.set_defaults(command=_refresh_cloudflare)
    return parser


def _reached_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    trace = environ.get(context.TRACE)
    if trace is not None:
        trace.append(("app", "reached", None))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"reached the application\n"]


def _check(arguments: argparse.Namespace, out: TextIO) -> int:
    shield = Shield(_reached_app, arguments.policy)
    policy = shield.policy
    mode = "compiled" if HAS_EXTENSIONS else "pure Python"
    print(f"policy {arguments.policy}: valid (kernels: {mode})", file=out)

    client = policy.client
    trusted = ", ".join(client.trusted_proxies) or "none (forwarding headers ignored)"
    print(f"client: trusted proxies {trusted}", file=out)
    if client.trusted_proxies:
        hops = (
            f"{client.hops} hop(s) from the right"
            if client.hops
            else "rightmost untrusted"
        )
        print(f"client: source {client.source}, {hops}", file=out)

    print(
        f"layers: {', '.join(type(layer).__name__ for layer in shield.layers)}",
        file=out,
    )
    if not shield.routes.routes:
        print("routes: none", file=out)
    for route in shield.routes.routes:
        methods = ",".join(sorted(route.methods)) or "*"
        settings = _route_settings(route.rule)
        print(f"route {route.id}: {methods} {route.pattern}{settings}", file=out)
    return 0


_ROUTE_SETTINGS = ("access", "request", "auth", "limits", "cache", "headers")


def _route_settings(rule: Any) -> str:
    """Describe which layers a route rule configures, such as ``[auth, cache]``."""
    names = [name for name in _ROUTE_SETTINGS if getattr(rule, name, None) is not None]
    return f" [{', '.join(names)}]" if names else ""


def _explain(arguments: argparse.Namespace, out: TextIO) -> int:
    shield = Shield(_reached_app, arguments.policy)
    environ = _environ(arguments)
    trace: list[tuple[str, str, Any]] = []
    environ[context.TRACE] = trace

    captured: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = status
        captured["headers"] = headers
        return lambda data: None

    body = b"".join(shield(environ, start_response))

    for layer, decision, detail in trace:
        print(f"{layer}: {decision}{_describe(layer, detail)}", file=out)
    print(f"response: {captured.get('status', '(none)')}", file=out)
    for name, value in captured.get("headers", []):
        print(f"  {name}: {value}", file=out)
    if not captured.get("status", "").startswith("200"):
        print(f"  {body.decode('utf-8', 'replace')}", file=out)
    return 0


def _describe(layer: str, detail: Any) -> str:
    if layer == "client" and detail is not None:
        text = f" (peer {detail.peer}, source {detail.source}"
        if detail.reason:
            text += f", fallback reason {detail.reason}"
        return text + ")"
    if isinstance(detail, context.Decision):
        rule = f", rule {detail.rule_id}" if detail.rule_id else ""
        return f" (reason {detail.reason}{rule})"
    if layer == "route" and detail is not None:
        methods = ",".join(sorted(detail.methods)) or "*"
        return f" ({methods} {detail.pattern})"
    return ""


def _environ(arguments: argparse.Namespace) -> dict[str, Any]:
    path, _, query = arguments.path.partition("?")
    body = (arguments.data or "").encode("utf-8")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": arguments.method.upper(),
        "SCRIPT_NAME": "",
        "PATH_INFO": path or "/",
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "443" if arguments.scheme == "https" else "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": arguments.peer,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": arguments.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": True,
    }
    if arguments.data is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    for header in arguments.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise ConfigurationError("--header", header, "expected 'Name: value'")
        key = name.strip().upper().replace("-", "_")
        value = value.strip()
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
            continue
        key = "HTTP_" + key
        # Servers join repeated header lines with a comma; do the same.
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _refresh_cloudflare(arguments: argparse.Namespace, out: TextIO) -> int:
    ranges: list[str] = []
    for key, version in (("ips_v4", 4), ("ips_v6", 6)):
        path = getattr(arguments, key)
        found = _read_ranges(key, path, version)
        if not found:
            raise ConfigurationError(key, path, f"no IPv{version} network in the file")
        ranges.extend(found)

    if arguments.output:
        target = Path(arguments.output)
    else:
        target = Path(
            str(resources.files("wsgishield") / "data" / "cloudflare-ips.txt")
        )
    today = datetime.date.today().isoformat()
    header = (
        "# Cloudflare's published edge ranges"
        " (www.cloudflare.com/ips-v4 and /ips-v6).\n"
        f"# snapshot: {today}\n"
    )
    try:
        target.write_text(header + "\n".join(ranges) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError("--output", str(target), str(exc)) from exc
    print(f"wrote {len(ranges)} ranges to {target}", file=out)
    return 0


def _read_ranges(key: str, path: str, version: int) -> list[str]:
    """Read one network per line from ``path``, all of IP version ``version``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigurationError(key, path, reason) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(key, path, f"not UTF-8 text: {exc}") from exc

    ranges = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            parsed_version, _, prefix = parse_network(text)
        except ValueError as exc:
            raise ConfigurationError(f"{path}:{number}", text, str(exc)) from exc
        if parsed_version != version:
            raise ConfigurationError(
                f"{path}:{number}", text, f"expected an IPv{version} network"
            )
        shortest = (
            MIN_CLOUDFLARE_PREFIX_V4 if version == 4 else MIN_CLOUDFLARE_PREFIX_V6
        )
        if prefix < shortest:
            raise ConfigurationError(
                f"{path}:{number}", text, "too broad for a Cloudflare edge range"
            )
        ranges.append(text)
    return ranges
