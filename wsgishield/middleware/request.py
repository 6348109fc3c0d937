"""Request limits middleware: reject malformed or oversize requests early.

Checks run cheapest first. The method comes first (405 with ``Allow``), then
the length of the request target (414) and the number and size of header
fields (431). Then come the body framing (400, 411), the declared body size
(413), and the media type and content coding (415). Then the body:

- A JSON body, a compressed body and every POST, PUT or PATCH body of a
  route with a schema is read here, within the limit, and handed to the app as a fresh
  ``wsgi.input`` with an exact ``CONTENT_LENGTH``. JSON is pre-scanned for
  depth and tokens before any decoder runs (400), then decoded into the
  route's schema (400 for malformed JSON, 422 for a mismatch). The decoded
  object goes under ``wsgishield.body``.
- Any other body streams to the app through a ``wsgi.input`` that enforces
  the limit while the app reads. If the app reads past the limit, or the
  body ends before its ``Content-Length``, the client gets 413 or 400 in
  place of whatever the app answered, unless the app had already sent its
  response headers through ``write()``.

The reverse proxy should enforce the same body limit (nginx
``client_max_body_size``) so that an oversize upload is cut at the edge; this
layer is the guarantee behind it, per route and whatever the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .. import context, events
from .._fast import requestgate as gate
from .._fast.requestgate import (
    READ_BODY,
    REJECTED,
    STREAMED,
    RequestGate,
    RequestLimitsCall,
)
from ..errors import ConfigurationError
from ..policy import RequestPolicy, RouteRequest
from ..problem import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Problem
from ..request_limits import (
    LimitedInput,
    RequestBodyError,
    inflate,
    read_body,
    unreadable_body,
)
from ..schemas import BodySchema, SchemaError, registered_schemas, resolve_schema
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["RequestLimitsMiddleware"]

_DEFAULTS = RequestPolicy()
_encode = msgspec.json.Encoder().encode

_ROUTE = context.ROUTE
_TRACE = context.TRACE

# Trace detail for each admit() outcome that lets a request through: the
# way its body reaches the app.
_BODY_HANDLING = {
    gate.NO_BODY: "no body",
    gate.STREAMED: "streamed",
    gate.BUFFERED: "buffered",
}


class _RouteLimits:
    """The limits of one route (or the defaults), merged and precomputed."""

    __slots__ = (
        "body_types",
        "decompress",
        "gate",
        "headers_too_large",
        "json_max_depth",
        "json_max_tokens",
        "max_body",
        "max_header_bytes",
        "max_headers",
        "max_inflate_ratio",
        "max_url_bytes",
        "method_not_allowed",
        "methods",
        "schema",
        "unsupported_media_type",
        "uri_too_long",
    )

    def __init__(
        self,
        defaults: RequestPolicy,
        override: RouteRequest | None,
        schema: type[msgspec.Struct] | None,
        type_base: str,
    ) -> None:
        def pick(name: str) -> Any:
            value = getattr(override, name, None) if override is not None else None
            return getattr(defaults, name) if value is None else value

        methods = set(pick("methods"))
        # HEAD is GET without a body (RFC 9110, section 9.3.2).
        if "GET" in methods:
            methods.add("HEAD")
        self.methods = frozenset(methods)
        self.max_url_bytes: int = pick("max_url_bytes")
        self.max_headers: int = pick("max_headers")
        self.max_header_bytes: int = pick("max_header_bytes")
        self.max_body: int = pick("max_body")
        self.json_max_depth: int = pick("json_max_depth")
        self.json_max_tokens: int = pick("json_max_tokens")
        self.decompress: bool = pick("decompress")
        self.max_inflate_ratio: int = pick("max_inflate_ratio")
        self.schema = BodySchema(schema) if schema is not None else None

        types: list[str] = list(pick("content_types"))
        if self.schema is not None and not types:
            types = ["application/json"]
        self.gate = RequestGate(
            methods=self.methods,
            max_url_bytes=self.max_url_bytes,
            max_headers=self.max_headers,
            max_header_bytes=self.max_header_bytes,
            max_body=self.max_body,
            content_types=types,
            decompress=self.decompress,
            json_max_depth=self.json_max_depth,
            json_max_tokens=self.json_max_tokens,
            decode=self.schema.decoder.decode if self.schema is not None else None,
        )
        # Content-Type value: (is JSON, accepted on this route), filled by the gate.
        self.body_types: dict[str, tuple[bool, bool]] = self.gate.body_types

        allow = ", ".join(sorted(self.methods))
        self.method_not_allowed = Problem(
            405,
            "method-not-allowed",
            "Method Not Allowed",
            f"Allowed methods: {allow}.",
            headers=[("Allow", allow)],
            type_base=type_base,
        )
        self.unsupported_media_type = Problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            f"Expected a body of type {', '.join(types)}." if types else None,
            type_base=type_base,
        )
        self.uri_too_long = Problem(
            414,
            "uri-too-long",
            "URI Too Long",
            f"The request target is longer than {self.max_url_bytes} bytes.",
            type_base=type_base,
        )
        self.headers_too_large = Problem(
            431,
            "header-fields-too-large",
            "Request Header Fields Too Large",
            f"At most {self.max_headers} header fields of "
            f"{self.max_header_bytes} bytes in total are accepted.",
            type_base=type_base,
        )

    def body_type(self, content_type: str) -> tuple[bool, bool]:
        """Return whether a Content-Type value is JSON and accepted on this route."""
        verdict: tuple[bool, bool] = self.gate.body_type(content_type)
        return verdict


class _HeldResponse:
    """Hold the app's ``start_response`` until the app returns.

    While the status is held, a body error found during the app's call can
    still replace the response; once released, calls go straight through.
    """

    __slots__ = ("_pending", "_released", "_start_response", "_write", "forwarded")

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self._pending: tuple[str, list[tuple[str, str]], OptExcInfo | None] | None = (
            None
        )
        self._released = False
        self._write: Callable[[bytes], object] | None = None
        self.forwarded = False

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        if self._released or self.forwarded:
            return self._start_response(status, headers, exc_info)
        self._pending = (status, headers, exc_info)
        return self.write

    def write(self, data: bytes) -> object:
        """Send the held status, then ``data``: no rejection can follow."""
        self._forward()
        if self._write is None:
            raise RuntimeError("write() called before start_response()")
        return self._write(data)

    def release(self, result: Iterable[bytes]) -> Iterable[bytes]:
        self._released = True
        self._forward()
        return result

    def _forward(self) -> None:
        if self.forwarded or self._pending is None:
            return
        self.forwarded = True
        self._write = self._start_response(*self._pending)


class RequestLimitsMiddleware(WrappingLayer):
    """Enforce request limits per route, then call the wrapped app.

    Calling the layer runs its request path, ``requestgate.RequestLimitsCall``
    in ``wsgishield._fast``: one ``admit()`` call checks the request and, for
    a JSON or schema body with a Content-Length, reads, pre-scans and decodes
    the body. A request that passes untraced goes on to the app from there;
    the other outcomes come back to :meth:`finish`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        defaults: RequestPolicy = _DEFAULTS,
        routes: Mapping[str, RouteRequest] | None = None,
        schemas: Mapping[str, type[msgspec.Struct]] | None = None,
        problem_type_base: str = PROBLEM_TYPE_BASE,
    ) -> None:
        self.app = app

        routes = dict(routes or {})
        found = _route_schemas(routes, schemas)
        self.default = _RouteLimits(defaults, None, None, problem_type_base)
        self.by_route: dict[str, _RouteLimits] = {
            route_id: _RouteLimits(
                defaults,
                routes.get(route_id),
                found.get(route_id),
                problem_type_base,
            )
            for route_id in routes.keys() | found.keys()
        }

        def problem(
            status: int, slug: str, title: str, detail: str | None = None
        ) -> Problem:
            return Problem(status, slug, title, detail, type_base=problem_type_base)

        self.invalid_framing = problem(400, "invalid-framing", "Invalid Body Framing")
        self.length_required = problem(
            411,
            "length-required",
            "Length Required",
            "A chunked body needs a server that terminates wsgi.input; "
            "send Content-Length.",
        )
        self.body_too_large = problem(413, "body-too-large", "Content Too Large")
        self.invalid_body = problem(400, "invalid-body", "Invalid Body")
        self.invalid_json = problem(400, "invalid-json", "Invalid JSON")
        self.validation_failed = problem(422, "validation-failed", "Validation Failed")
        self.unsupported_encoding = problem(
            415, "unsupported-content-encoding", "Unsupported Content Encoding"
        )
        self.fast_call = RequestLimitsCall(self)

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> RequestLimitsMiddleware | None:
        overrides = {
            rule.id: rule.request for rule in policy.routes if rule.request is not None
        }
        registered = {
            route_id: schema
            for route_id, schema in registered_schemas().items()
            if any(rule.id == route_id for rule in policy.routes)
        }
        if policy.request is None and not overrides and not registered:
            return None
        return cls(
            app,
            defaults=policy.request or _DEFAULTS,
            routes=overrides,
            schemas=registered,
            problem_type_base=policy.problem_type_base,
        )

    def finish(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        outcome: int,
        detail: Any,
    ) -> Iterable[bytes]:
        """Act on an outcome of admit(): read, reject, trace, stream or pass on."""
        route = environ.get(_ROUTE)
        limits = (
            self.default if route is None else self.by_route.get(route.id, self.default)
        )
        if outcome >= READ_BODY:
            try:
                if outcome == READ_BODY:
                    outcome, detail = self._read_body(environ, limits, *detail)
                if outcome >= REJECTED:
                    raise self._rejection(outcome, detail, limits)
            except _Rejected as rejection:
                return self._reject(environ, start_response, rejection)

        trace: list[tuple[str, str, Any]] | None = environ.get(_TRACE)
        if trace is not None:
            trace.append(("request", "allowed", _BODY_HANDLING[outcome]))

        if outcome == STREAMED:
            return self._stream(environ, start_response, limits, detail)
        return self._call_app(environ, start_response)

    def _read_body(
        self,
        environ: WSGIEnvironment,
        limits: _RouteLimits,
        length: int | None,
        coding: str | None,
        start: bytes | None,
        json_body: bool,
        validate: bool,
    ) -> tuple[int, Any]:
        """Read a chunked, compressed or short-read body, then check it like admit()."""
        try:
            body = read_body(environ["wsgi.input"], limits.max_body, length, start)
            if coding is not None:
                body = inflate(body, coding, limits.max_body, limits.max_inflate_ratio)
        except RequestBodyError as exc:
            raise self._body_error(exc) from None

        outcome, detail = gate.check_body(
            environ, limits.gate, body, json_body, validate
        )
        if outcome == gate.BUFFERED:
            if length is None:
                # admit() rejects Transfer-Encoding beside a Content-Length,
                # so only a chunked body, which has no length, still carries it.
                environ.pop("HTTP_TRANSFER_ENCODING", None)
            if coding is not None:
                environ.pop("HTTP_CONTENT_ENCODING", None)
        return outcome, detail

    def _rejection(self, outcome: int, detail: Any, limits: _RouteLimits) -> _Rejected:
        """Return the rejection for an outcome of admit() or check_body()."""
        if outcome == gate.METHOD_NOT_ALLOWED:
            return _Rejected(limits.method_not_allowed, "method-not-allowed")
        if outcome == gate.URI_TOO_LONG:
            return _Rejected(limits.uri_too_long, "uri-too-long")
        if outcome == gate.HEADERS_TOO_LARGE:
            return _Rejected(limits.headers_too_large, "headers-too-large")
        if outcome == gate.CONFLICTING_FRAMING:
            return self._framing(
                "The request has both Content-Length and Transfer-Encoding."
            )
        if outcome == gate.TRANSFER_CODING_NOT_CHUNKED:
            return self._framing("Transfer-Encoding must be chunked.")
        if outcome == gate.LENGTH_REQUIRED:
            return _Rejected(self.length_required, "length-required")
        if outcome == gate.INVALID_CONTENT_LENGTH:
            return self._framing("Content-Length is not a number.")
        if outcome == gate.BODY_TOO_LARGE:
            return _Rejected(
                self.body_too_large,
                "body-too-large",
                f"The body is larger than {limits.max_body} bytes.",
            )
        if outcome == gate.UNSUPPORTED_MEDIA_TYPE:
            return _Rejected(limits.unsupported_media_type, "unsupported-media-type")
        if outcome == gate.UNSUPPORTED_CONTENT_CODING:
            # RFC 7694, section 3: name the codings that are accepted.
            accepted = "gzip, deflate" if limits.decompress else "identity"
            return _Rejected(
                self.unsupported_encoding,
                "unsupported-content-encoding",
                f"Accepted content codings: {accepted}.",
                headers=[("Accept-Encoding", accepted)],
            )
        if outcome in (gate.JSON_TOO_DEEP, gate.JSON_TOO_MANY_TOKENS):
            return self._scan_error(outcome, detail, limits)
        if outcome == gate.INPUT_FAILED:
            return self._body_error(unreadable_body(detail))
        if outcome == gate.DECODE_FAILED and limits.schema is not None:
            failure, body = detail
            return self._schema_error(limits.schema.error(body, failure), body)
        raise RuntimeError(f"unknown request gate outcome {outcome}")

    def _schema_error(self, error: SchemaError, body: bytes) -> _Rejected:
        if error.status == 422:
            errors = [msgspec.structs.asdict(field) for field in error.errors]
            return _Rejected(
                self.validation_failed, "schema-mismatch", error.detail, errors=errors
            )
        detail = error.detail if body else "The body is empty."
        return _Rejected(self.invalid_json, "invalid-json", detail)

    def _scan_error(self, outcome: int, offset: int, limits: _RouteLimits) -> _Rejected:
        if outcome == gate.JSON_TOO_DEEP:
            return _Rejected(
                self.invalid_json,
                "json-too-deep",
                f"JSON nesting exceeds {limits.json_max_depth} levels "
                f"at byte {offset}.",
            )
        return _Rejected(
            self.invalid_json,
            "json-too-many-tokens",
            f"JSON has more than {limits.json_max_tokens} tokens at byte {offset}.",
        )

    def _stream(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        limits: _RouteLimits,
        length: int | None,
    ) -> Iterable[bytes]:
        """Call the app with a limited ``wsgi.input``, and reject on its body errors."""
        body = LimitedInput(environ["wsgi.input"], limits.max_body, length)
        environ["wsgi.input"] = body
        response = _HeldResponse(start_response)

        try:
            result = self._call_app(environ, response.start_response)
        except Exception:
            # The app may raise our error, or its own after catching ours.
            if body.error is None or response.forwarded:
                raise
            return self._reject(environ, start_response, self._body_error(body.error))

        # NOTE: a body error after this point (an app that wrote with write()
        # or reads inside its iterable) reaches the server, which cuts the
        # response short: the client gets no 413, though no cut body is used.
        if body.error is not None and not response.forwarded:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return self._reject(environ, start_response, self._body_error(body.error))
        return response.release(result)

    def _body_error(self, error: RequestBodyError) -> _Rejected:
        problem = self.body_too_large if error.status == 413 else self.invalid_body
        return _Rejected(problem, error.reason, error.detail)

    def _framing(self, detail: str) -> _Rejected:
        return _Rejected(self.invalid_framing, "invalid-framing", detail)

    def _reject(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        rejection: _Rejected,
    ) -> Iterable[bytes]:
        """Record, log and send one rejection."""
        problem = rejection.problem
        route = environ.get(context.ROUTE)
        rule_id = route.id if route is not None else None
        context.record_decision(
            environ, "request", "invalid", rejection.reason, rule_id
        )
        client_ip = environ.get(context.CLIENT_IP, "")
        events.emit(
            "request",
            "invalid",
            {
                "event.reason": rejection.reason,
                "rule.id": rule_id,
                "client.ip": client_ip,
                "http.request.method": environ.get("REQUEST_METHOD", "")[:20],
                "url.path": environ.get("PATH_INFO", "")[:256],
                "http.response.status_code": problem.status,
            },
            client=client_ip,
        )
        if rejection.detail is None and rejection.errors is None:
            return problem(environ, start_response, rejection.headers)
        return _send_problem(environ, start_response, rejection)


class _Rejected(Exception):
    """A check failed: the problem to send and what to record about it."""

    def __init__(
        self,
        problem: Problem,
        reason: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.problem = problem
        self.reason = reason
        self.detail = detail
        self.errors = errors
        self.headers = headers


def _send_problem(
    environ: WSGIEnvironment, start_response: StartResponse, rejection: _Rejected
) -> Iterable[bytes]:
    """Send a problem with this occurrence's ``detail`` and ``errors`` members."""
    problem = rejection.problem
    document: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
    }
    if rejection.detail is not None:
        document["detail"] = rejection.detail
    if rejection.errors:
        document["errors"] = rejection.errors
    body = _encode(document)
    start_response(
        problem.status_line,
        [
            ("Content-Type", PROBLEM_CONTENT_TYPE),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            # The problem's own extra headers, such as Allow.
            *problem.headers[3:],
            *rejection.headers,
        ],
    )
    if environ.get("REQUEST_METHOD") == "HEAD":
        return [b""]
    return [body]


def _route_schemas(
    routes: Mapping[str, RouteRequest],
    schemas: Mapping[str, type[msgspec.Struct]] | None,
) -> dict[str, type[msgspec.Struct]]:
    """Merge schemas named in route settings with those passed or registered."""
    found = dict(schemas or {})
    for route_id, settings in routes.items():
        if settings.schema is None:
            continue
        if route_id in found:
            raise ConfigurationError(
                f"routes.{route_id}.request.schema",
                settings.schema,
                f"route {route_id!r} already has the schema "
                f"{found[route_id].__qualname__}",
            )
        found[route_id] = resolve_schema(
            settings.schema, f"routes.{route_id}.request.schema"
        )
    return found
