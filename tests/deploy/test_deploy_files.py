"""The deployment files work with the real tools: nginx -t and systemd-analyze verify."""

from __future__ import annotations

import re
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
    site = site.replace("/etc/bsepar-panel/tls/fullchain.pem", str(cert))
    return site.replace("/etc/bsepar-panel/tls/privkey.pem", str(key))


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


def test_the_nginx_site_serves_the_acme_challenge_and_static_files_once():
    site = (DEPLOY / "nginx.conf").read_text()
    port80 = site.split("listen 443")[0]
    # certbot --webroot answers the challenge from its webroot, not through the app.
    assert (
        "location ^~ /.well-known/acme-challenge/ {\n        root /var/www/letsencrypt;" in port80
    )
    # The certificate is the installer's tls/ links (self-signed until certbot has run).
    assert "/etc/letsencrypt/live" not in site.replace("# ", "")
    assert "ssl_certificate     /etc/bsepar-panel/tls/fullchain.pem;" in site
    static = site.split("location /static/ {")[1].split("}")[0]
    assert "expires" not in static and static.count("Cache-Control") == 1
    assert "alias /opt/bsepar-panel/current/staticfiles/;" in static
    assert "$connection_upgrade" not in site
    assert "location = /favicon.ico" in site


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not available"
)
@pytest.mark.parametrize(
    "name",
    [
        "bsepar-panel.service",
        "bsepar-panel-streams.service",
        "bsepar-panel-cleanup.service",
        "bsepar-panel-cleanup.timer",
        "bsepar-panel-backup.service",
        "bsepar-panel-backup.timer",
        "bsepar-panel-orphans.service",
        "bsepar-panel-orphans.timer",
    ],
)
def test_the_systemd_units_verify(tmp_path, name):
    # verify insists that ExecStart's binary exists: point the units at stand-ins under
    # tmp_path, keeping every other line as shipped.
    fake_root = tmp_path / "opt"
    (fake_root / "current" / ".venv" / "bin").mkdir(parents=True)
    stand_in = fake_root / "current" / ".venv" / "bin" / "python"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    # Every unit beside it: the two app services name each other (Wants=, PartOf=).
    for unit_name in [p.name for p in DEPLOY.glob("bsepar-panel*.service")] + [name]:
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


def sandbox(unit: str) -> list[str]:
    lines = (DEPLOY / unit).read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("NoNewPrivileges")))
    return [line for line in lines[start:] if line and not line.startswith(("#", "["))]


@pytest.mark.parametrize(
    "unit",
    [
        "bsepar-panel-streams.service",
        "bsepar-panel-cleanup.service",
        "bsepar-panel-backup.service",
        "bsepar-panel-orphans.service",
    ],
)
def test_the_other_units_have_the_main_units_sandbox(unit):
    main = sandbox("bsepar-panel.service")
    if unit == "bsepar-panel-streams.service":
        assert main == sandbox(unit)
    else:
        assert [line for line in main if line != "WantedBy=multi-user.target"] == sandbox(unit)


def test_the_units_run_the_current_release_and_log_under_their_name():
    service = (DEPLOY / "bsepar-panel.service").read_text()
    assert "SyslogIdentifier=bsepar-panel\n" in service
    assert (
        "ExecStart=/opt/bsepar-panel/current/.venv/bin/python -m gunicorn "
        "-c /opt/bsepar-panel/current/deploy/gunicorn.conf.py --chdir /opt/bsepar-panel/current "
    ) in service
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in service
    backup = (DEPLOY / "bsepar-panel-backup.service").read_text()
    assert "manage.py backup --keep-days ${BACKUP_KEEP_DAYS}" in backup
    assert "OnCalendar=daily" in (DEPLOY / "bsepar-panel-backup.timer").read_text()
    orphans = (DEPLOY / "bsepar-panel-orphans.service").read_text()
    assert "manage.py remove_orphan_attachments\n" in orphans
    assert "SyslogIdentifier=bsepar-panel-orphans\n" in orphans


@pytest.mark.parametrize(
    ("shell", "name"),
    [
        ("bash", "install.sh"),
        ("sh", "bsepar-manage"),
        ("sh", "certbot-deploy-hook.sh"),
    ],
)
def test_the_scripts_are_valid_shell(shell, name):
    result = subprocess.run([shell, "-n", str(DEPLOY / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def run_hook(tmp_path: Path, lineage: str, nginx_ok: bool = True) -> subprocess.CompletedProcess:
    """The certbot deploy hook with this installation's tls/ under tmp_path and stand-ins for
    nginx and systemctl that record how they were called."""
    conf = tmp_path / "conf"
    (conf / "tls").mkdir(parents=True, exist_ok=True)
    for name, target in (("fullchain.pem", "selfsigned.pem"), ("privkey.pem", "selfsigned.key")):
        link = conf / "tls" / name
        if not link.is_symlink():
            link.symlink_to(target)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for tool, code in (("nginx", 0 if nginx_ok else 1), ("systemctl", 0)):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit {code}\n')
        stub.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(
        (DEPLOY / "certbot-deploy-hook.sh").read_text().replace("/etc/bsepar-panel", str(conf))
    )
    return subprocess.run(
        ["sh", str(hook)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "RENEWED_LINEAGE": lineage},
        capture_output=True,
        text=True,
    )


def test_the_certbot_hook_switches_to_the_new_certificate_and_reloads_nginx(tmp_path):
    tls = tmp_path / "conf" / "tls"
    other = run_hook(tmp_path, "/etc/letsencrypt/live/other.example.org")
    assert other.returncode == 0
    assert (tls / "fullchain.pem").readlink() == Path("selfsigned.pem")
    assert not (tmp_path / "calls").exists()

    ours = run_hook(tmp_path, "/etc/letsencrypt/live/panel.example.com")
    assert ours.returncode == 0, ours.stderr
    assert (tls / "fullchain.pem").readlink() == Path(
        "/etc/letsencrypt/live/panel.example.com/fullchain.pem"
    )
    assert (tls / "privkey.pem").readlink() == Path(
        "/etc/letsencrypt/live/panel.example.com/privkey.pem"
    )
    assert (tmp_path / "calls").read_text().splitlines() == [
        "nginx -t -q",
        "systemctl reload nginx",
    ]


def test_the_certbot_hook_does_not_reload_a_broken_configuration(tmp_path):
    result = run_hook(tmp_path, "/etc/letsencrypt/live/panel.example.com", nginx_ok=False)
    assert result.returncode == 1
    assert "not reloaded" in result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["nginx -t -q"]


def unit_settings(name: str) -> list[str]:
    return [
        line
        for line in (DEPLOY / name).read_text().splitlines()
        if line and not line.startswith(("#", "["))
    ]


def test_the_stream_service_runs_the_same_server_on_its_own_port():
    """bsepar-panel-streams.service: the main unit's command, user and environment file on its
    own port (nginx's bsepar_streams), stopped, restarted and reloaded with bsepar-panel.service,
    which starts it."""
    main, streams = (
        unit_settings("bsepar-panel.service"),
        unit_settings("bsepar-panel-streams.service"),
    )
    for line in main:
        if line.startswith(("ExecStart=", "ExecReload=", "User=", "EnvironmentFile=", "Working")):
            assert line in streams
    assert "Environment=BIND=127.0.0.1:8000" in main
    assert "Environment=BIND=127.0.0.1:8001" in streams
    assert "PartOf=bsepar-panel.service" in streams
    assert "ReloadPropagatedFrom=bsepar-panel.service" in streams
    assert "SyslogIdentifier=bsepar-panel-streams" in streams
    assert any(x.startswith("Wants=") and "bsepar-panel-streams.service" in x for x in main)
    site = (DEPLOY / "nginx.conf").read_text()
    upstream = site.split("upstream bsepar_streams {")[1].split("}")[0]
    assert "server 127.0.0.1:8001;" in upstream
    # Down, the page service takes its streams: as nginx's backup server, so a POST the stream
    # service got is never sent twice (no error_page re-sending the request).
    assert "server 127.0.0.1:8000 backup;" in upstream
    assert "error_page" not in site.split("location /ai-chat/stream/ {")[1].split("}")[0]
    # nginx's default: never re-send a POST that was sent
    assert not re.search(r"^\s*proxy_next_upstream\b", site, re.M)


def test_the_stream_location_keeps_its_streaming_settings():
    """The stream location (served by the stream service, or by the page service as the
    upstream's backup when it is down) is unbuffered, long and takes a message's attachments."""
    site = (DEPLOY / "nginx.conf").read_text()
    stream = site.split("location /ai-chat/stream/ {")[1].split("}")[0]
    assert "proxy_pass http://bsepar_streams;" in stream
    for block in (stream,):
        for needed in (
            "client_max_body_size 21m;",
            "proxy_buffering off;",
            "proxy_read_timeout 600s;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            'proxy_set_header Connection "";',
        ):
            assert needed in block, needed
    # The exact-match location of before would leave the re-attach GET to `location /`.
    assert "location = /ai-chat/stream/" not in site


def run_reload_service(
    tmp_path: Path, active: set[str], old_pins: str = "gunicorn==23.0.0", new_pins: str = ""
) -> list[str]:
    """install.sh's reload_service (as installed on a real system: SYSTEM=1), cut out of the
    script, with a stand-in systemctl that records its calls and reports `active` as running."""
    script = (DEPLOY / "install.sh").read_text()
    functions = re.search(r"^server_pins\(\).*?^reload_service\(\) \{.*?^\}\n", script, re.S | re.M)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'if [ "$1" = is-active ]; then\n'
        f'    case " {" ".join(sorted(active))} " in *" $3 "*) exit 0 ;; *) exit 3 ;; esac\n'
        "fi\n"
    )
    (bin_dir / "systemctl").chmod(0o755)
    for name, pins in (("from", old_pins), ("to", new_pins or old_pins)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "requirements.txt").write_text(f"django==5.2\n{pins}\n")
    harness = tmp_path / "harness.sh"
    harness.write_text(
        'set -euo pipefail\nSYSTEM=1\nAPP_DIR=/opt/bsepar-panel\nsay() { echo "== $*"; }\n'
        + functions.group(0)
        + f'reload_service "$1" {tmp_path}/to\n'
    )
    result = subprocess.run(
        ["bash", str(harness), str(tmp_path / "from")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [c for c in calls.read_text().splitlines() if not c.startswith("is-active")]


PAGES, STREAMS = "bsepar-panel.service", "bsepar-panel-streams.service"


def test_an_upgrade_reloads_both_services_once(tmp_path):
    # Also a rollback: install.sh --rollback calls the same reload_service.
    assert run_reload_service(tmp_path, {PAGES, STREAMS}) == [
        "daemon-reload",
        f"reload {PAGES} {STREAMS}",
    ]


def test_an_upgrade_from_before_the_stream_service_starts_it(tmp_path):
    assert run_reload_service(tmp_path, {PAGES}) == [
        "daemon-reload",
        f"start {STREAMS}",
        f"reload {PAGES}",
    ]


def test_new_server_libraries_restart_both_services_once(tmp_path):
    calls = run_reload_service(tmp_path, {PAGES, STREAMS}, new_pins="gunicorn==23.1.0")
    assert calls == ["daemon-reload", f"restart {PAGES} {STREAMS}"]


def test_a_first_install_starts_both_services(tmp_path):
    assert run_reload_service(tmp_path, set()) == ["daemon-reload", f"start {PAGES} {STREAMS}"]
