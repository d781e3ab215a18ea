"""Django's SQLite backend, opened read-only: the engine of the query action's database alias.

The file is opened with a `file:…?mode=ro` URI (SQLite refuses every write on the connection,
whatever SQL reaches it) and `PRAGMA query_only` on top. The alias is a TEST MIRROR of the
default database, so tests read the test database through it. A read-only connection never
takes the writers' lock (it is Django's plain backend, not `core.sqlite`) and, in WAL mode, never
blocks a writer.

`get_connection_params` and `get_new_connection` are the hooks every Django backend implements;
tests/actions/test_read_only.py fails if a Django upgrade stops them from applying.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        name = str(params["database"])
        if not name.startswith("file:"):
            params["database"] = f"file:{quote(name)}?mode=ro"
        elif "mode=" not in name:
            params["database"] = f"{name}{'&' if '?' in name else '?'}mode=ro"
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        connection.execute("PRAGMA query_only = ON")
        return connection
