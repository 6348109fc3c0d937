"""Constants shared by the JSON pre-scan kernel and its twin."""

# Verdicts of ``scan_json``. The offset returned with a rejection is the byte
# at which the limit was crossed, so the scan stops there.
OK = 0
TOO_DEEP = 1
TOO_MANY_TOKENS = 2

VERDICTS = {OK: "ok", TOO_DEEP: "too-deep", TOO_MANY_TOKENS: "too-many-tokens"}
