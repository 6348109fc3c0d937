"""Options shared by every policy struct."""

from __future__ import annotations

from typing import Any

# Unknown keys are errors, structs are immutable once validated, and every
# field is passed by keyword.
STRUCT_OPTIONS: dict[str, Any] = {
    "forbid_unknown_fields": True,
    "frozen": True,
    "kw_only": True,
}
