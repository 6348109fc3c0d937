"""Constants shared by the header size kernel and its twin."""

# Each header line costs its name, its value, ": " and CRLF on the wire.
HEADER_LINE_OVERHEAD = 4

# Environ keys of header fields: every "HTTP_*" key, and these two, which
# PEP 3333 stores without the prefix.
UNPREFIXED_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")
