"""Run the command line as ``python -m wsgishield``."""

import sys

from .cli import main

sys.exit(main())
