"""wsgishield: composable WSGI middlewares that harden and speed up an API.

::

    from wsgishield import Shield

    app.wsgi_app = Shield(app.wsgi_app, policy="shield.toml")
"""

from __future__ import annotations

import logging

from ._fast import HAS_EXTENSIONS
from .client import ClientAddress, ClientAddressResolver
from .errors import ConfigurationError, StoreError, WsgiShieldError
from .policy import Policy, load_policy
from .problem import Problem
from .shield import Shield

__all__ = [
    "HAS_EXTENSIONS",
    "ClientAddress",
    "ClientAddressResolver",
    "ConfigurationError",
    "Policy",
    "Problem",
    "Shield",
    "StoreError",
    "WsgiShieldError",
    "__version__",
    "load_policy",
]

__version__ = "0.1.0"

# The library emits records but leaves formatting and output to the
# deployment; without this, Python's last-resort handler would print
# security events to stderr when the application configured no logging.
logging.getLogger("wsgishield").addHandler(logging.NullHandler())
