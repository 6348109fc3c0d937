"""Request body schemas of the example API, named in ``shield.toml``.

The shield decodes a JSON body into the route's struct before the view
runs, and rejects a mismatch with a 422 that lists each failing field, so
the views read ``request_body(request.environ)`` and never parse twice.
msgspec already rejects lone surrogates from JSON escapes as malformed JSON
(400), which keeps names storable as UTF-8.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["MAX_NAME_LENGTH", "MAX_PRICE_CENTS", "ItemBody"]

MAX_NAME_LENGTH = 200
MAX_PRICE_CENTS = 10**9


class ItemBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of ``POST /items`` and ``PUT /items/<id>``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
    price_cents: Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE_CENTS)]

    def __post_init__(self) -> None:
        if not self.name.isprintable():
            raise ValueError("name must contain printable characters only")
