"""Body schemas that the schema tests name in policies as ``module:Name``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class Item(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    qty: Annotated[int, msgspec.Meta(ge=1, le=1000)]


class NewOrder(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_id: int
    items: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=100)]
    priority: Literal["normal", "express"] = "normal"
    note: str | None = None


class Odd(msgspec.Struct):
    """A schema whose field names need JSON pointer escaping."""

    a_b: int = msgspec.field(name="a/b")
    c_d: int = msgspec.field(name="c~d")


NOT_A_STRUCT = {"customer_id": int}


class Range(msgspec.Struct):
    """A schema with a check across fields, raised from ``__post_init__``."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
