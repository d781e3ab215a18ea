"""Django's SQLite backend, with writers queued instead of polling (ENGINE `core.sqlite`).

The options Django supports do most of the work (settings.py: `transaction_mode="IMMEDIATE"`,
WAL and `synchronous=NORMAL` in `init_command`, a busy `timeout`). What they cannot change is
how a writer waits: one that finds the database locked sleeps and tries again, 1, 2, 5 … up to
100 ms apart, until its timeout, so under a burst of chat turns most writers are asleep while
the lock sits free and a write of a millisecond waits seconds.

Here a transaction first queues for a lock that wakes the next writer the moment it is
released: a lock shared by the threads of this process, then an `flock` on a file beside the
database, shared by the worker processes. Both are taken when a transaction starts (autocommit
turned off) and given back when it ends (commit, rollback, autocommit back on, or close),
before the on-commit hooks run. Reads do not queue (WAL mode). Waiting for the process lock is
bounded by the database's `timeout`, as SQLite's own wait is.

Measured against Django's backend with the same options (`bench/writers.py`, bench/RESULTS.md):
the slowest transactions wait a few times less (p99 and max), which is why this is kept. It
overrides only public methods of the connection wrapper (`set_autocommit`, `commit`,
`rollback`, `close`), as Django's documentation allows for subclassed backends.
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

    def set_autocommit(
        self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        if autocommit:
            # The transaction has ended (commit or rollback ran); release before the
            # on-commit hooks, which may write themselves.
            self._writer_release()
            super().set_autocommit(True, force_begin_transaction_with_broken_autocommit)
            return
        # Open the connection first: opening it turns autocommit on, which would release.
        self.close_if_health_check_failed()
        self.ensure_connection()
        if self._writer_lock is None:
            self._writer_acquire()
        try:
            super().set_autocommit(False, force_begin_transaction_with_broken_autocommit)
        except BaseException:
            self._writer_release()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._writer_release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._writer_release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._writer_release()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
