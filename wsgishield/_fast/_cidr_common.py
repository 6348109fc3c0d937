"""Constants shared by the longest-prefix matcher kernel and its twin."""

#: What a lookup returns when no prefix contains the address.
NO_MATCH = -1

#: Rule ids are stored as signed 32-bit integers in the compiled table.
MAX_RULE = 2**31 - 1

IPV4_BITS = 32
IPV6_BITS = 128

# ::ffff:0:0/96 contains the IPv4-mapped IPv6 addresses (RFC 4291, section
# 2.5.5.2); the address parser returns those as IPv4, so prefixes inside it
# are stored as IPv4 prefixes too.
IPV4_MAPPED_HIGH_BITS = 0xFFFF

# "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" is 49 characters;
# longer text is rejected before any parsing.
MAX_NETWORK_TEXT = 64
