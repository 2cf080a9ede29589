"""The tuning service's records, durable across server restarts: files and fine-tuning jobs in one
SQLite database under the service's state directory. A record is the JSON object the API returns
(plus fields the server keeps for itself, whose names start with an underscore; `_created`, the
creation time to the microsecond, orders the listings)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

TABLES = ("files", "jobs")


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # one writer at a time; SQLite itself serialises the rest
        with self._connect() as db:
            for table in TABLES:
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                           "(id TEXT PRIMARY KEY, created_at REAL NOT NULL, record TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def put(self, table: str, record: dict) -> dict:
        assert table in TABLES
        with self._lock, self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO {table} (id, created_at, record) VALUES (?, ?, ?)",
                       (record["id"], record.get("_created", record["created_at"]), json.dumps(record)))
        return record

    def get(self, table: str, ident: str) -> dict | None:
        assert table in TABLES
        with self._connect() as db:
            row = db.execute(f"SELECT record FROM {table} WHERE id = ?", (ident,)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, table: str) -> list[dict]:
        """Every record, newest first (ties broken by id, so the order is stable for paging)."""
        assert table in TABLES
        with self._connect() as db:
            rows = db.execute(f"SELECT record FROM {table} ORDER BY created_at DESC, id DESC").fetchall()
        return [json.loads(row[0]) for row in rows]

    def delete(self, table: str, ident: str) -> bool:
        assert table in TABLES
        with self._lock, self._connect() as db:
            return db.execute(f"DELETE FROM {table} WHERE id = ?", (ident,)).rowcount > 0
