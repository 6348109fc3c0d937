"""Gunicorn settings that give request threads a 128 KiB stack.

The gthread worker creates its request threads after ``post_fork``, so each
one gets the stack size set here; a decoder that recursed once per nesting
level would overflow it within a few thousand levels.
"""

from __future__ import annotations

import threading
from typing import Any

STACK_SIZE = 128 * 1024


def post_fork(server: Any, worker: Any) -> None:
    threading.stack_size(STACK_SIZE)
