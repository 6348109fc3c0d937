"""A JSON log formatter that writes Elastic Common Schema documents.

The library never installs handlers. A deployment that wants JSON lines
attaches :class:`EcsJsonFormatter` to its handler, for example in a
Gunicorn ``logconfig_dict`` or with :func:`json_handler`::

    import logging
    from wsgishield.logging import json_handler

    logging.getLogger("wsgishield.events").addHandler(json_handler())

Each record becomes one line: ``@timestamp``, ``log.level``, ``log.logger``,
``message``, ``ecs.version`` and ``process.pid``, then the event fields that
:func:`wsgishield.events.emit` put in ``record.event``. Keys stay flat and
dotted (``"client.ip"``), which Filebeat's ``ndjson`` parser expands with
``expand_keys: true`` and Elasticsearch accepts as is.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from .events import ECS_VERSION

__all__ = ["EcsJsonFormatter", "json_handler"]

_encoder = msgspec.json.Encoder()


def _default(value: Any) -> Any:
    # Values msgspec cannot encode (exceptions, custom objects) become text
    # instead of failing the log call.
    return str(value)


_fallback_encoder = msgspec.json.Encoder(enc_hook=_default)


class EcsJsonFormatter(logging.Formatter):
    """Format each record as one ECS JSON document on one line."""

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "@timestamp": timestamp.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "ecs.version": ECS_VERSION,
            "process.pid": record.process,
        }
        event = getattr(record, "event", None)
        if isinstance(event, Mapping):
            document.update(event)
        if record.exc_info and record.exc_info[0] is not None:
            document["error.type"] = record.exc_info[0].__name__
            document["error.message"] = str(record.exc_info[1])
            document["error.stack_trace"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(document).decode("utf-8")
        except (TypeError, msgspec.EncodeError):
            return _fallback_encoder.encode(document).decode("utf-8")


def json_handler(
    stream: IO[str] | None = None, level: int = logging.NOTSET
) -> logging.Handler:
    """Return a stream handler (stderr by default) with :class:`EcsJsonFormatter`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(EcsJsonFormatter())
    return handler
