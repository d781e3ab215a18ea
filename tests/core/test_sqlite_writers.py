"""core.sqlite: writers queue on a lock (thread lock, then flock) held for the transaction."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest
from django.db import connection, connections, transaction

from api_manager.models import ProviderKey
from tests.conftest import make_key

pytestmark = [
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only"),
    pytest.mark.django_db(transaction=True),
]


def other_process_can_write() -> bool:
    """What another worker process would find: can it take the writer flock now?"""
    fd = os.open(f"{connection.settings_dict['NAME']}-writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def test_a_transaction_holds_the_writer_lock_until_it_ends(alice):
    assert other_process_can_write()
    with transaction.atomic():
        make_key(alice, label="in a transaction")
        assert not other_process_can_write()
    assert other_process_can_write()

    with pytest.raises(RuntimeError), transaction.atomic():
        make_key(alice, label="rolled back")
        assert not other_process_can_write()
        raise RuntimeError
    assert other_process_can_write()
    assert list(ProviderKey.objects.values_list("label", flat=True)) == ["in a transaction"]


def test_concurrent_writers_from_many_threads_all_get_in(alice):
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def write(n: int) -> None:
        try:
            start.wait(10)
            for i in range(10):
                with transaction.atomic():
                    make_key(alice, label=f"thread {n} key {i}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert ProviderKey.objects.count() == 160


def test_a_transaction_on_a_new_connection_holds_the_writer_lock(alice):
    """Opening the connection turns autocommit on; that must not give back the lock the
    transaction is being started under (`atomic` opens the connection first; this does not)."""
    connection.close()
    transaction.set_autocommit(False)
    try:
        assert not other_process_can_write()
        make_key(alice, label="first")
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert other_process_can_write()
    assert ProviderKey.objects.filter(label="first").exists()


def test_on_commit_hooks_run_after_the_lock_is_given_back(alice):
    """A hook that writes starts a transaction of its own: it must not wait for the lock its
    own connection still holds."""
    seen: list[bool] = []

    def hook() -> None:
        seen.append(other_process_can_write())
        with transaction.atomic():
            make_key(alice, label="from the hook")

    with transaction.atomic():
        make_key(alice, label="outer")
        transaction.on_commit(hook)
    assert seen == [True]
    assert ProviderKey.objects.count() == 2
