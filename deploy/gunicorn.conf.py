"""gunicorn configuration: ASGI through the uvicorn worker, as in production.

`make run` and both systemd units (bsepar-panel: pages; bsepar-panel-streams: the chat streams)
use this file. Environment overrides: BIND, WEB_CONCURRENCY, GUNICORN_TIMEOUT,
GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_PROC_NAME.
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "uvicorn_worker.UvicornWorker"
# Async workers serve many streams each; one per core (at least two) keeps every core busy.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
# With async workers `timeout` is a heartbeat, not a request limit; streams may run for minutes.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On restart, give open chat streams time to finish before the worker is killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "300"))
keepalive = 75
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# The name `ps` shows: the stream unit sets its own.
proc_name = os.environ.get("GUNICORN_PROC_NAME", "bsepar-panel")
# gunicorn's control socket (gunicornc) would be made in the service user's home, the data
# directory; systemctl (ExecReload: HUP) is how the service is driven.
control_socket_disable = True


def post_fork(server: object, worker: object) -> None:
    """A worker forked after a reload (HUP) imports the release `current` now points at: forget
    the directory listings the master cached for the paths it imported from before."""
    import importlib

    importlib.invalidate_caches()
