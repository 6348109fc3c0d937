"""Item storage: SQLite by default, PostgreSQL when ``DATABASE_URL`` names one.

``DATABASE_URL=postgresql://user@host/dbname`` selects PostgreSQL through
psycopg 3; anything else (or nothing) uses the SQLite file named by
``EXAMPLE_SQLITE_PATH`` (default ``app_example/instance/items.db``). Each
call opens its own connection, which is cheap for SQLite and keeps every
Gunicorn worker independent; a real deployment would pool PostgreSQL
connections instead.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_SQLITE_PATH = Path(__file__).resolve().parent / "instance" / "items.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id {id_type},
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)
"""

# Refresh tokens already exchanged, by jti, so each is used once across
# every worker and host that shares the database.
_USED_TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS used_refresh_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
)
"""


class Database:
    """A minimal repository of items over SQLite or PostgreSQL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url if url is not None else os.environ.get("DATABASE_URL", "")
        self.is_postgres = self.url.startswith(("postgres://", "postgresql://"))
        if self.is_postgres:
            import psycopg  # noqa: F401  (fail at start-up, not on a request)

            self.placeholder = "%s"
        else:
            path = Path(os.environ.get("EXAMPLE_SQLITE_PATH", DEFAULT_SQLITE_PATH))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.sqlite_path = path
            self.placeholder = "?"
        self.create_schema()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        if self.is_postgres:
            import psycopg

            with psycopg.connect(self.url) as connection:
                yield connection
            return

        connection = sqlite3.connect(self.sqlite_path, timeout=5)
        try:
            yield connection
            connection.commit()
        finally:
            connection.close()

    def create_schema(self) -> None:
        if not self.is_postgres:
            self._enable_wal()
        id_type = (
            "BIGSERIAL PRIMARY KEY"
            if self.is_postgres
            else "INTEGER PRIMARY KEY AUTOINCREMENT"
        )
        with self.connection() as connection:
            connection.execute(_SCHEMA.format(id_type=id_type))
            connection.execute(_USED_TOKENS_SCHEMA)

    def _enable_wal(self) -> None:
        """Switch the SQLite file to WAL mode, so readers in other workers
        proceed while one writes. The mode is stored in the file; workers
        that start together may find it locked for a moment."""
        for attempt in range(50):
            try:
                with self.connection() as connection:
                    connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)

    def _query(
        self, sql: str, parameters: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        with self.connection() as connection:
            cursor = connection.execute(sql.replace("?", self.placeholder), parameters)
            return list(cursor.fetchall()) if cursor.description else []

    def list_items(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT id, name, price_cents, created_at FROM items"
            " ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [_item(row) for row in rows]

    def get_item(self, item_id: int) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT id, name, price_cents, created_at FROM items WHERE id = ?",
            (item_id,),
        )
        return _item(rows[0]) if rows else None

    def create_item(self, name: str, price_cents: int) -> dict[str, Any]:
        rows = self._query(
            "INSERT INTO items (name, price_cents, created_at) VALUES (?, ?, ?) "
            "RETURNING id, name, price_cents, created_at",
            (name, price_cents, time.time()),
        )
        return _item(rows[0])

    def update_item(
        self, item_id: int, name: str, price_cents: int
    ) -> dict[str, Any] | None:
        rows = self._query(
            "UPDATE items SET name = ?, price_cents = ? WHERE id = ? "
            "RETURNING id, name, price_cents, created_at",
            (name, price_cents, item_id),
        )
        return _item(rows[0]) if rows else None

    def delete_item(self, item_id: int) -> bool:
        rows = self._query("DELETE FROM items WHERE id = ? RETURNING id", (item_id,))
        return bool(rows)

    def count_items(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM items")[0][0])

    def claim_refresh_token(self, jti: str, expires_at: int) -> bool:
        """Record ``jti`` as used; return ``False`` if it was used before.

        One INSERT decides, so two workers racing with the same token cannot
        both win. Rows of expired tokens are deleted on the way.
        """
        self._query(
            "DELETE FROM used_refresh_tokens WHERE expires_at < ?", (int(time.time()),)
        )
        rows = self._query(
            "INSERT INTO used_refresh_tokens (jti, expires_at) VALUES (?, ?)"
            " ON CONFLICT (jti) DO NOTHING RETURNING jti",
            (jti, expires_at),
        )
        return bool(rows)


def _item(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "name": row[1], "price_cents": row[2], "created_at": row[3]}
