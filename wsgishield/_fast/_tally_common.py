"""Constants shared by the request tally kernel, its twin and the metrics."""

#: Environ keys the tally reads (the values of ``wsgishield.context``).
ROUTE_KEY = "wsgishield.route"
DECISION_KEY = "wsgishield.decision"

#: The return value of ``RequestTally.leave`` for a counted request that
#: also carries a decision, which the caller counts in its own family.
MORE = 1

#: The label value for every value outside a label's vocabulary.
OTHER = "other"

#: The route label of requests that no route rule matched. Route ids cannot
#: contain parentheses, so the sentinel never collides with a real route.
UNMATCHED_ROUTE = "(unmatched)"

#: The decision label of a request no layer decided.
ALLOWED = "allowed"

# RFC 9110 section 9 methods plus PATCH (RFC 5789). Anything else a client
# invents is counted under OTHER.
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)

#: Status class labels, indexed by the first digit of the status minus one.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
