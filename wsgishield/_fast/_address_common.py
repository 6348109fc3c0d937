"""Constants shared by the address parser kernel and its twin."""

# The longest useful form is a bracketed IPv6 address with an embedded IPv4
# tail, a zone id and a port (about 60 characters); anything much longer is
# rejected before any parsing, so work per value stays bounded.
MAX_ADDRESS_TEXT = 128

# RFC 6874 allows unreserved characters in a zone id.
ZONE_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
