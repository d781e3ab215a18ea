"""Run the real serving stack for tests and benchmarks: gunicorn + uvicorn workers behind nginx.

Tests start it with `served(...)` (N app servers on one database, the shipped nginx site over
TLS in front); the benchmarks in bench/ use the pieces. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdef"
ENCRYPTION_KEYS = "kWaYx8xY2mQhD0pLqYV1dO6n2v3m0sJ8vFQ6y5w0b0Q="
HOST = "panel.example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to (the test database, in tests)."""
    if "sqlite" in settings_dict["ENGINE"]:
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def redis_url(db: int = 15) -> str | None:
    """A Redis URL if a server answers on 127.0.0.1:6379 (its database `db` is flushed)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as conn:
            conn.sendall(
                f"*2\r\n$6\r\nSELECT\r\n${len(str(db))}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n".encode()
            )
            reply = conn.recv(100)
    except OSError:
        return None
    return f"redis://127.0.0.1:6379/{db}" if reply.startswith(b"+OK") else None


def panel_env(database: str, cache: str | None, static_root: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bsepar_panel.settings",
            "DJANGO_DEBUG": "off",
            "SECRET_KEY": SECRET_KEY,
            "ENCRYPTION_KEYS": ENCRYPTION_KEYS,
            "ALLOWED_HOSTS": f"{HOST},127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
            "DATABASE_URL": database,
            # The default shared cache (the database's) unless Redis runs: never a per-process
            # cache, which several workers would not share.
            "CACHE_URL": cache or "dbcache://bsepar_cache",
            "STATIC_ROOT": static_root,
            "WEB_CONCURRENCY": "1",
            "GUNICORN_LOGLEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def collectstatic(static_root: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


def wait_http(url: str, timeout: float = 30.0, **kwargs) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, **kwargs).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {last}")


class Process:
    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.log_path = log or Path(tempfile.mkstemp(prefix="bsepar-proc-", suffix=".log")[1])
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


class Panel(Process):
    """One app server: gunicorn with the uvicorn worker and deploy/gunicorn.conf.py."""

    def __init__(self, env: dict[str, str], workers: int = 1, cpus: str = "") -> None:
        """`cpus`: pin the server to these CPUs (taskset list, e.g. "1"), for the benchmark."""
        self.port = free_port()
        env = dict(env, BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY=str(workers))
        super().__init__(
            [
                *(["taskset", "-c", cpus] if cpus else []),
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "deploy/gunicorn.conf.py",
                "bsepar_panel.asgi:application",
            ],
            env,
        )
        try:
            # Generous: on a shared, loaded machine importing the app takes tens of seconds.
            wait_http(f"{self.url}/healthz", timeout=120)
        except RuntimeError:
            self.stop()
            raise RuntimeError("the panel did not start:\n" + self.output()) from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Nginx(Process):
    """deploy/nginx.conf as shipped, with its upstream, ports, certificate and static root
    pointed at this machine's test processes.

    With several upstreams, the site's TLS server block is also repeated once per app server,
    on a port of its own whose upstream is that server alone (`server_url(i)`): a test routes a
    request to the server it means, still through nginx over TLS."""

    def __init__(self, upstreams: list[int], static_root: str, media_root: str = "") -> None:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="bsepar-nginx-"))
        # Run as root, nginx's workers are an unprivileged user: they must be able to pass
        # through this (0700) folder to the temp folders for bodies over 16 KB, or every
        # such request is nginx's own 500 and never reaches the panel.
        self.dir.chmod(0o711)
        self.port, self.http_port = free_port(), free_port()
        cert, key = self_signed(self.dir)
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
        site = re.sub(r"    server 127\.0\.0\.1:8000;\n", servers, site)
        # The test servers serve the streams too (no stream service unless a test points
        # `upstream bsepar_streams` at one); its fallback, the page service: the first server.
        site = site.replace("    server 127.0.0.1:8001;\n", servers)
        site = site.replace(
            "server 127.0.0.1:8000 backup;", f"server 127.0.0.1:{upstreams[0]} backup;"
        )
        site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{self.port} ssl http2;")
        site = site.replace("listen [::]:443 ssl http2;", "")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.http_port};").replace(
            "listen [::]:80;", ""
        )
        site = site.replace("/etc/bsepar-panel/tls/fullchain.pem", str(cert))
        site = site.replace("/etc/bsepar-panel/tls/privkey.pem", str(key))
        site = site.replace("/opt/bsepar-panel/current/staticfiles/", static_root.rstrip("/") + "/")
        if media_root:
            site = site.replace("/var/lib/bsepar-panel/media/", media_root.rstrip("/") + "/")
        self.server_ports: list[int] = []
        if len(upstreams) > 1:
            tls_block = site[site.index("server {\n    listen 127.0.0.1:" + str(self.port)) :]
            for index, port in enumerate(upstreams):
                self.server_ports.append(free_port())
                name = f"bsepar_panel_{index}"
                site += (
                    f"\nupstream {name} {{\n    server 127.0.0.1:{port};\n    keepalive 8;\n}}\n"
                )
                site += (
                    tls_block.replace(
                        f"listen 127.0.0.1:{self.port} ssl",
                        f"listen 127.0.0.1:{self.server_ports[-1]} ssl",
                    )
                    .replace("http://bsepar_panel;", f"http://{name};")
                    .replace("http://bsepar_streams;", f"http://{name};")
                )
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{site}
}}
"""
        )
        super().__init__(["nginx", "-c", str(conf), "-p", str(self.dir), "-g", "daemon off;"])
        wait_http(f"{self.url}/healthz", verify=False, headers={"Host": HOST})

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def server_url(self, index: int) -> str:
        """The URL of the site block whose upstream is app server `index` alone."""
        return f"https://127.0.0.1:{self.server_ports[index]}"


@contextlib.contextmanager
def static_files() -> Iterator[str]:
    """A collectstatic folder nginx's workers (an unprivileged user) can read."""
    root = tempfile.mkdtemp(prefix="bsepar-static-")
    try:
        collectstatic(root, panel_env("sqlite:///unused.sqlite3", None, root))
        for path in [Path(root), *Path(root).rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Served:
    """App servers on one database and, unless asked otherwise, nginx in front of them all."""

    panels: list[Panel]
    proxy: Nginx | None

    @property
    def panel(self) -> Panel:
        return self.panels[0]

    @property
    def url(self) -> str:
        """nginx, whose upstream is every app server."""
        assert self.proxy is not None, "served(..., proxy=False) has no nginx"
        return self.proxy.url

    def server_url(self, index: int) -> str:
        """nginx's site block for app server `index` alone (several servers), or that server's
        own address when there is no nginx."""
        if self.proxy is None:
            return self.panels[index].url
        if len(self.panels) == 1:
            return self.proxy.url
        return self.proxy.server_url(index)


@contextlib.contextmanager
def served(
    static_root: str,
    *,
    servers: int = 1,
    workers: int = 1,
    cache: str | None = None,
    database: str | None = None,
    media_root: str = "",
    proxy: bool = True,
    **extra: str,
) -> Iterator[Served]:
    """Start `servers` app servers (gunicorn, `workers` uvicorn workers each) on `database`
    (default: the one Django is connected to, the test database in tests) with `cache`
    (CACHE_URL; default the database's) and `extra` environment, then nginx in front of them
    (`proxy`); stop them all when done, or if any fails to start."""
    if database is None:
        from django.db import connection

        database = database_url(connection.settings_dict)
    if media_root:
        extra = {"MEDIA_ROOT": media_root, **extra}
    env = panel_env(database, cache, static_root, **extra)
    with contextlib.ExitStack() as started:
        panels: list[Panel] = []
        for _ in range(servers):
            panels.append(Panel(env, workers=workers))
            started.callback(panels[-1].stop)
        nginx = None
        if proxy:
            nginx = Nginx([p.port for p in panels], static_root, media_root=media_root)
            started.callback(nginx.stop)
        yield Served(panels, nginx)
