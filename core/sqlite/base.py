"""Django's SQLite backend, with writers queued instead of polling (ENGINE `core.sqlite`).

SQLite lets one writer in at a time. A connection that finds the database locked sleeps and
tries again, 1, 2, 5 … up to 100 ms apart, until its timeout. When many chat turns start or
end at once (every turn writes twice, each in its own request thread), most writers were
asleep while the lock sat free, and a write of a millisecond waited seconds: at 100 concurrent
streams the profile showed the worker's threads blocked in `BEGIN IMMEDIATE` most of the time.

Here a transaction first queues for a lock that wakes the next writer the moment it is
released: a lock shared by the threads of this process, then an `flock` on a file beside the
database, shared by the worker processes. Both are taken before `BEGIN IMMEDIATE` and given back
when the transaction ends (commit, rollback or close). Reads do not queue (WAL mode). Waiting
for the process lock is bounded by the database's `timeout`, as SQLite's own wait is.
"""

from __future__ import annotations

import fcntl
import os
import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _process_lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _is_memory(name: str) -> bool:
    return name == ":memory:" or "mode=memory" in name


class DatabaseWrapper(base.DatabaseWrapper):
    # The process lock this connection holds while in a transaction, else None.
    _writer_lock: threading.Lock | None = None
    _writer_fd: int | None = None

    def _writer_acquire(self) -> None:
        name = str(self.settings_dict["NAME"])
        lock = _process_lock(name)
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        if not lock.acquire(timeout=timeout):
            raise OperationalError("database is locked")
        try:
            if not _is_memory(name):
                if self._writer_fd is None:
                    self._writer_fd = os.open(f"{name}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
                # Only the thread holding the process lock waits here, so at most one per
                # process; the holder in another process never waits on us (no cycle).
                fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
        except BaseException:
            lock.release()
            raise
        self._writer_lock = lock

    def _writer_release(self) -> None:
        lock, self._writer_lock = self._writer_lock, None
        if lock is None:
            return
        if self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
        lock.release()

    def _start_transaction_under_autocommit(self) -> None:
        self._writer_acquire()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._writer_release()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._writer_release()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._writer_release()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._writer_release()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
