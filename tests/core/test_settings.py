"""The settings refuse a bad production configuration and pass Django's deploy checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_FERNET = "kWaYx8xY2mQhD0pLqYV1dO6n2v3m0sJ8vFQ6y5w0b0Q="


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SECRET_KEY",
            "ENCRYPTION_KEYS",
            "DJANGO_DEBUG",
            "DJANGO_SETTINGS_MODULE",
            "SECURE_SSL_REDIRECT",
            "ALLOWED_HOSTS",
        }
    }
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "bsepar_panel.settings"
    # A .env in a developer's checkout must not leak into these runs.
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    return _run("-c", "import django; django.setup()", **env)


@pytest.fixture(autouse=True)
def _no_dotenv():
    if (ROOT / ".env").exists():
        pytest.skip("a developer .env is present; these checks need a clean environment")


def test_it_refuses_to_start_without_a_secret_key():
    result = _check(DJANGO_DEBUG="off", ENCRYPTION_KEYS=GOOD_FERNET)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr


def test_it_refuses_to_start_without_encryption_keys():
    result = _check(DJANGO_DEBUG="off", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "ENCRYPTION_KEYS is not set" in result.stderr


def test_it_refuses_a_malformed_encryption_key():
    result = _check(
        DJANGO_DEBUG="off", SECRET_KEY="x" * 50, ENCRYPTION_KEYS=f"{GOOD_FERNET},not-a-key"
    )
    assert result.returncode != 0
    assert "ENCRYPTION_KEYS entry 2 is not a valid Fernet key" in result.stderr
    assert "not-a-key" not in result.stderr


def test_it_boots_in_debug_with_nothing_set():
    result = _check(DJANGO_DEBUG="on")
    assert result.returncode == 0, result.stderr


def test_deploy_checks_pass_with_production_values():
    result = _run(
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="off",
        SECRET_KEY="a-long-random-production-secret-key-" + "q7Zp3kR9vW2xL5mN8bT4" * 2,
        ENCRYPTION_KEYS=GOOD_FERNET,
        ALLOWED_HOSTS="panel.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
