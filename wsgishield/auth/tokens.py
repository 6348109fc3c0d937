"""Strict decoding of a compact JWS (RFC 7515) before any signature check.

PyJWT checks signatures well but decodes leniently; this module adds what it
lacks. The token must be three base64url segments with no padding and a
non-empty signature. Each JSON part must be UTF-8 text holding an object
with no duplicate member names at any depth, because RFC 7515, section 5.2
lets a parser keep either copy and two parsers could then disagree on the
claims. ``NaN`` and ``Infinity`` are rejected.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .errors import TokenError

__all__ = ["CompactToken", "decode_json_object", "split_token"]

_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\Z")


class CompactToken:
    """The decoded parts of a compact token whose signature is not yet checked."""

    __slots__ = ("header", "payload", "signature", "signing_input")

    def __init__(
        self,
        header: dict[str, Any],
        payload: dict[str, Any],
        signing_input: bytes,
        signature: bytes,
    ) -> None:
        self.header = header
        self.payload = payload
        self.signing_input = signing_input
        self.signature = signature


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(
    object_pairs_hook=_unique_object, parse_constant=_reject_constant
)


def _b64url_decode(segment: str) -> bytes:
    # A length of 4n+1 cannot come from any byte string.
    if len(segment) % 4 == 1:
        raise TokenError("malformed", "The token is not valid base64url.")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("malformed", "The token is not valid base64url.") from exc


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Decode strict JSON text that must be an object.

    Raises ``ValueError`` on invalid UTF-8, invalid JSON, a duplicate
    member name, ``NaN``/``Infinity`` or a value other than an object.
    """
    try:
        text = raw.decode("utf-8")
        value = _decoder.decode(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    if type(value) is not dict:
        raise ValueError("JSON value is not an object")
    return value


def split_token(token: str) -> CompactToken:
    """Decode the header and payload of ``token`` without checking the signature.

    Raises :class:`TokenError` with reason ``malformed`` on any deviation
    from the strict form.
    """
    match = _COMPACT.match(token)
    if match is None:
        raise TokenError("malformed", "The token is not a signed compact JWT.")
    header_segment, payload_segment, signature_segment = match.groups()
    try:
        header = decode_json_object(_b64url_decode(header_segment))
        payload = decode_json_object(_b64url_decode(payload_segment))
    except ValueError as exc:
        raise TokenError(
            "malformed", "The token header or payload is not a JSON object."
        ) from exc
    signing_input = token[: match.end(2)].encode("ascii")
    return CompactToken(
        header, payload, signing_input, _b64url_decode(signature_segment)
    )
