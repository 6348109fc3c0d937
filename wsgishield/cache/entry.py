"""Stored responses and the marker that records a resource's ``Vary``.

Both are msgspec structs encoded as MessagePack arrays, which is what the
Redis store writes and the smallest and fastest form msgspec offers.
"""

from __future__ import annotations

import msgspec

__all__ = ["Entry", "VaryMarker", "decode", "encode"]


class Entry(msgspec.Struct, array_like=True, tag=1):
    """One stored response with what is needed to judge and serve it."""

    #: WSGI status line, such as ``"200 OK"``.
    status: str
    #: Response headers as stored; hop-by-hop and tag headers removed.
    headers: list[tuple[str, str]]
    body: bytes
    #: Wall-clock time (seconds since the epoch) when the response was stored.
    stored_at: float
    #: Freshness lifetime in seconds.
    ttl: float
    #: Seconds after expiry during which the entry may be served while one
    #: refresh runs (RFC 5861).
    stale_while_revalidate: float = 0.0
    #: Seconds after expiry during which the entry may replace an error.
    stale_if_error: float = 0.0
    #: Strong or weak entity tag, quoted; empty when there is none.
    etag: str = ""
    last_modified: str = ""
    tags: list[str] = []

    def remaining(self, now: float) -> float:
        """Seconds of freshness left, negative once the entry is stale."""
        return self.ttl - (now - self.stored_at)


class VaryMarker(msgspec.Struct, array_like=True, tag=2):
    """Stands at a resource's primary key when its responses carry ``Vary``.

    The entries themselves live under keys that also hash the values of the
    request headers named here (RFC 9111, section 4.1).
    """

    vary: list[str]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Entry | VaryMarker)

encode = _encoder.encode


def decode(data: bytes) -> Entry | VaryMarker:
    """Decode a stored value; raises ``msgspec.DecodeError`` on garbage."""
    return _decoder.decode(data)
