# Gunicorn configuration for the shielded API. All settings and hooks live in
# the importable module wsgishield.gunicorn; override them with environment
# variables (see its docstring) or by assigning below the import.
from wsgishield.gunicorn import *  # noqa: F403
