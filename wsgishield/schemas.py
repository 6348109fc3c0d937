"""Request body schemas: one ``msgspec.Struct`` per route, decoded once.

A route names its schema in the policy as ``"module:Name"``::

    [[routes]]
    id = "orders-create"
    path = "/orders"
    request = { schema = "app.schemas:NewOrder" }

or the struct claims a route id with a decorator, which works as long as the
module is imported before the :class:`~wsgishield.Shield` is built::

    @body_schema("orders-create")
    class NewOrder(msgspec.Struct, forbid_unknown_fields=True):
        customer_id: int
        items: list[Item]

The request limits layer decodes a JSON body into the struct after the depth
and token pre-scan, and stores the result under ``wsgishield.body``. Read it
with :func:`request_body` instead of parsing the body a second time.

A body that is not JSON gets 400. A body that does not match the struct gets
422 with one entry per failing field, each located by a JSON pointer
(RFC 6901). msgspec stops at the first error, so the per-field list comes from
a second, slower pass that runs only on bodies that already failed. That
pass descends into nested structs and lists of structs.
"""

from __future__ import annotations

import collections.abc
import importlib
import re
import typing
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import msgspec

from . import context
from .errors import ConfigurationError, WsgiShieldError

__all__ = [
    "BodySchema",
    "FieldError",
    "SchemaError",
    "body_schema",
    "registered_schemas",
    "request_body",
    "resolve_schema",
]

StructT = TypeVar("StructT", bound=type[msgspec.Struct])

# A problem lists at most this many fields, and quotes at most this many
# characters of any message or key, so an error never echoes large input.
MAX_FIELD_ERRORS = 20
#: Bodies longer than this get only msgspec's first error in a 422. The
#: field-by-field pass converts a nested value again at each level of a
#: recursive schema, so its cost grows with the body size times the depth.
MAX_DETAILED_BODY = 64 * 1024
MAX_DETAIL_CHARS = 120
MAX_KEY_CHARS = 64

_registry: dict[str, type[msgspec.Struct]] = {}

# msgspec names a bad object key as "- at `key` in `$.path`".
_PATH = re.compile(
    r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL
)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN_FIELD = re.compile(
    r"^Object contains unknown field `(?P<name>.*)`$", re.DOTALL
)
_MISSING_FIELD = re.compile(
    r"^Object missing required field `(?P<name>.*)`$", re.DOTALL
)


class FieldError(msgspec.Struct, frozen=True):
    """One failing field: where it is (a JSON pointer) and what is wrong."""

    pointer: str
    detail: str


class SchemaError(WsgiShieldError, ValueError):
    """A body that is not JSON (``status`` 400) or does not match the schema (422)."""

    def __init__(self, status: int, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


def body_schema(route_id: str) -> Callable[[StructT], StructT]:
    """Register a struct as the body schema of the route with id ``route_id``."""

    def register(struct_type: StructT) -> StructT:
        if not (
            isinstance(struct_type, type) and issubclass(struct_type, msgspec.Struct)
        ):
            raise ConfigurationError(
                f"body_schema({route_id!r})", struct_type, "expected a msgspec.Struct"
            )
        _registry[route_id] = struct_type
        return struct_type

    return register


def registered_schemas() -> Mapping[str, type[msgspec.Struct]]:
    """Return the schemas registered with :func:`body_schema`, by route id."""
    return dict(_registry)


def resolve_schema(reference: str, key: str = "schema") -> type[msgspec.Struct]:
    """Import the struct named by ``"module:Name"``; ``key`` names it in errors."""
    module_name, _, attribute = reference.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(key, reference, f"cannot import: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, msgspec.Struct)):
        raise ConfigurationError(key, reference, "expected a msgspec.Struct subclass")
    return found


def request_body(environ: Mapping[str, Any]) -> Any:
    """Return the body the request limits layer decoded, or ``None``."""
    return environ.get(context.BODY)


class BodySchema:
    """A struct with its JSON decoder, built once per route."""

    __slots__ = ("_decoder", "name", "type")

    def __init__(self, struct_type: type[msgspec.Struct]) -> None:
        self.type = struct_type
        self.name = f"{struct_type.__module__}:{struct_type.__qualname__}"
        self._decoder = msgspec.json.Decoder(struct_type)

    @property
    def decoder(self) -> msgspec.json.Decoder[Any]:
        """The struct's JSON decoder, whose errors :meth:`error` explains."""
        return self._decoder

    def decode(self, body: bytes) -> Any:
        """Decode and validate ``body``, raising :class:`SchemaError` on failure."""
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise self.error(body, exc) from None

    def error(self, body: bytes, failure: msgspec.DecodeError) -> SchemaError:
        """Return the :class:`SchemaError` for a body the decoder rejected.

        ``failure`` is the decoder's error: a ``msgspec.ValidationError``
        gives 422 with the failing fields, any other decode error 400.
        """
        if not isinstance(failure, msgspec.ValidationError):
            return SchemaError(400, _shorten(str(failure)), [])

        # The typed decoder stops at the first mismatch, so "[" fails as
        # "expected object" before it is found truncated: parse it whole.
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return SchemaError(400, _shorten(str(exc)), [])
        if len(body) > MAX_DETAILED_BODY:
            errors = [_field_error(str(failure), "")]
        else:
            errors = self._field_errors(raw, failure)
        return SchemaError(422, "The body does not match the schema.", errors)

    def store(self, environ: MutableMapping[str, Any], body: bytes) -> None:
        """Decode ``body`` and store the result under ``wsgishield.body``."""
        environ[context.BODY] = self.decode(body)

    def _field_errors(
        self, raw: Any, first: msgspec.ValidationError
    ) -> list[FieldError]:
        """List the failing fields of ``raw``, descending into nested structs.

        Runs only after a failed decode, on a body the pre-scan already
        bounded, so neither the untyped decode before it nor the descent can
        recurse without limit.
        """
        errors: list[FieldError] = []
        _collect_struct(raw, self.type, "", errors)
        # msgspec's own error always appears, first if the pass above missed
        # it: errors from __post_init__ or tagged unions point at no field.
        first_error = _field_error(str(first), "")
        if not any(_explains(error.pointer, first_error) for error in errors):
            errors.insert(0, first_error)
        return errors[:MAX_FIELD_ERRORS]


def _collect_struct(
    raw: Any, struct_type: type[msgspec.Struct], prefix: str, errors: list[FieldError]
) -> bool:
    """Append the errors of each field of ``raw`` as ``struct_type``.

    Returns False when ``raw`` cannot be checked field by field (not an
    object, a tagged or array-like struct), so the caller reports it whole.
    """
    config = struct_type.__struct_config__
    if not isinstance(raw, dict) or config.tag is not None or config.array_like:
        return False

    known = set()
    for field in msgspec.structs.fields(struct_type):
        known.add(field.encode_name)
        pointer = prefix + "/" + _escape(field.encode_name)
        if field.encode_name not in raw:
            if field.required:
                errors.append(FieldError(pointer, "missing required field"))
            continue
        _collect_value(raw[field.encode_name], field.type, pointer, errors)

    if config.forbid_unknown_fields:
        for name in raw:
            if name not in known:
                pointer = prefix + "/" + _escape(_truncate(name))
                errors.append(FieldError(pointer, "unknown field"))
    return True


def _collect_value(
    value: Any, annotation: Any, pointer: str, errors: list[FieldError]
) -> None:
    """Append the error of one value, or of each failing part of it.

    A whole-value error that a nested struct or a list of structs can
    explain part by part is replaced by those parts' errors; a constraint on
    the container itself (such as a minimum length) stays whole.
    """
    if len(errors) >= MAX_FIELD_ERRORS:
        return
    try:
        # str_keys: object keys arrive as strings, as in JSON.
        msgspec.convert(value, annotation, str_keys=True)
        return
    except msgspec.ValidationError as exc:
        message = str(exc)
        whole = _field_error(message, pointer)
    except (TypeError, ValueError):
        # A type that converts differently from JSON decoding: msgspec's own
        # first error still names the failure.
        return

    found = len(errors)
    bare = _strip_annotated(annotation)
    origin = typing.get_origin(bare)
    arguments = typing.get_args(bare)
    if _is_struct(bare):
        _collect_struct(value, bare, pointer, errors)
    elif isinstance(value, list) and (
        (origin in _ARRAYS and len(arguments) == 1)
        or (origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis)
    ):
        first = _failing_index(message)
        _collect_items(value, arguments[0], pointer, None, first, errors)
    elif isinstance(value, dict) and origin in _MAPPINGS and len(arguments) == 2:
        values = list(value.values())
        _collect_items(values, arguments[1], pointer, list(value), None, errors)
    if len(errors) == found:
        errors.append(whole)


def _collect_items(
    items: list[Any],
    item_type: Any,
    pointer: str,
    keys: list[str] | None,
    first: int | None,
    errors: list[FieldError],
) -> None:
    """Append the errors of the failing ``items``, the values of an array or map.

    msgspec converts the items from the first one not yet checked and names
    the index of the first failing one, which is then explained on its own.
    That is one C pass per listed error, where converting each item alone
    costs a Python call for every valid item of a large body. ``keys``
    names the items of a mapping in its pointers, and is None for an array.
    ``first`` is the failing index, if the caller's conversion named it.
    """
    items_type = list[item_type]
    start = 0
    index = first
    while start < len(items) and len(errors) < MAX_FIELD_ERRORS:
        if index is None:
            try:
                msgspec.convert(items[start:], items_type, str_keys=True)
                return
            except msgspec.ValidationError as exc:
                index = _failing_index(str(exc))
            except (TypeError, ValueError):
                return
            if index is None:
                return
            index += start
        name = str(index) if keys is None else _escape(_truncate(keys[index]))
        _collect_value(items[index], item_type, pointer + "/" + name, errors)
        start = index + 1
        index = None


def _failing_index(message: str) -> int | None:
    """Return the array index that msgspec's error ``message`` starts its path with."""
    match = _PATH.match(message)
    if match is None or match.group("key"):
        return None
    first = _PATH_PART.match(match.group("path"))
    if first is None or first.group(2) in (None, "..."):
        return None
    return int(first.group(2))


# Containers whose items are checked one by one: a JSON array as any of
# these, and a JSON object as a mapping (a key's error stays whole).
_ARRAYS = (list, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _explains(pointer: str, first: FieldError) -> bool:
    """Tell whether an error at ``pointer`` is msgspec's first error ``first``.

    A ``first`` that ends at a mapping (see ``_field_error``) stands for an
    error at any of its values.
    """
    if pointer == first.pointer:
        return True
    return first.detail.startswith(_IN_MAPPING) and pointer.startswith(
        first.pointer + "/"
    )


# The start of the detail of an error in a mapping value whose key msgspec
# does not name.
_IN_MAPPING = "in a value: "


def _field_error(message: str, prefix: str) -> FieldError:
    """Turn msgspec's ``message - at `$.a[0].b``` into a pointer and a detail.

    msgspec writes ``[...]`` for a mapping value without naming its key, so
    the pointer then stops at the mapping and the detail states that.
    """
    pointer = prefix
    match = _PATH.match(message)
    if match is not None:
        message = match.group("message")
        if match.group("key"):
            message = "object key: " + message
        for name, index in _PATH_PART.findall(match.group("path")):
            if index == "...":
                message = _IN_MAPPING + message
                break
            pointer += "/" + (_escape(_truncate(name)) if name else index)
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown is not None:
        return FieldError(
            pointer + "/" + _escape(_truncate(unknown.group("name"))), "unknown field"
        )
    missing = _MISSING_FIELD.match(message)
    if missing is not None:
        return FieldError(
            pointer + "/" + _escape(_truncate(missing.group("name"))),
            "missing required field",
        )
    return FieldError(pointer, _shorten(message))


def _escape(name: str) -> str:
    """Escape a key for a JSON pointer (RFC 6901, section 3)."""
    return name.replace("~", "~0").replace("/", "~1")


def _truncate(name: str) -> str:
    return name if len(name) <= MAX_KEY_CHARS else name[:MAX_KEY_CHARS] + "..."


def _shorten(message: str) -> str:
    return (
        message
        if len(message) <= MAX_DETAIL_CHARS
        else message[:MAX_DETAIL_CHARS] + "..."
    )
