"""Constants shared by the address parser kernel and its twin."""

# The longest useful form is a bracketed IPv6 address with an embedded IPv4
# tail, a zone id and a port (about 60 characters); anything much longer is
# rejected before any parsing, so work per value stays bounded.
MAX_ADDRESS_TEXT = 128

# RFC 6874 allows unreserved characters in a zone id.
ZONE_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


def check_address_value(version: int, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an IPv``version`` address."""
    if version not in (4, 6):
        raise ValueError(f"expected IP version 4 or 6, got {version!r}")
    bits = 32 if version == 4 else 128
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value!r} is not an IPv{version} address value")
