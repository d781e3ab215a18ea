"""The deployment files work with the real tools: nginx -t and systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import stack

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def nginx_config(tmp: Path, site: str) -> Path:
    """Write a main nginx.conf around `site` (the site file's text) and return its path."""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {site}
}}
"""
    )
    return conf


def site_with_test_certificates(tmp: Path) -> str:
    cert, key = stack.self_signed(tmp)
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/panel.example.com/fullchain.pem", str(cert))
    return site.replace("/etc/letsencrypt/live/panel.example.com/privkey.pem", str(key))


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
)
def test_the_nginx_site_passes_nginx_t(tmp_path):
    site = site_with_test_certificates(tmp_path)
    # The site as shipped must keep its streaming settings.
    assert "proxy_buffering off" in site
    assert "proxy_read_timeout 600s" in site
    assert "X-Forwarded-For" in site
    conf = nginx_config(tmp_path, site)
    result = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not available"
)
@pytest.mark.parametrize(
    "name", ["bsepar-panel.service", "bsepar-panel-cleanup.service", "bsepar-panel-cleanup.timer"]
)
def test_the_systemd_units_verify(tmp_path, name):
    # verify insists that ExecStart's binary exists: point the units at stand-ins under
    # tmp_path, keeping every other line as shipped.
    fake_root = tmp_path / "opt"
    (fake_root / ".venv" / "bin").mkdir(parents=True)
    for binary in ("gunicorn", "python"):
        stand_in = fake_root / ".venv" / "bin" / binary
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    for unit_name in ("bsepar-panel-cleanup.service", name):
        text = (DEPLOY / unit_name).read_text().replace("/opt/bsepar-panel", str(fake_root))
        (tmp_path / unit_name).write_text(text)
    unit_text = (DEPLOY / name).read_text()
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "bsepar-panel" in line and "user" not in line.lower()
    ]
    assert not problems, result.stdout + result.stderr
    if name.endswith(".service"):
        for needed in (
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ReadWritePaths=/var/lib/bsepar-panel",
            "EnvironmentFile=",
        ):
            assert needed in unit_text


def test_install_sh_is_valid_bash():
    result = subprocess.run(
        ["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
