"""The Persian catalog: compiled, complete, with no empty or fuzzy entries, and nothing missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.utils import translation

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "locale" / "fa" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
SOURCES = [
    "manage.py",
    "bsepar_panel",
    "core",
    "users",
    "dashboard",
    "api_manager",
    "ai_chat",
    "templates",
    "static",
    "locale",
]


def test_the_catalog_has_no_empty_or_fuzzy_translation():
    po = polib.pofile(str(PO))
    assert len(po) > 100
    assert not [e.msgid for e in po if not e.msgstr and not e.obsolete]
    assert not [e.msgid for e in po if "fuzzy" in e.flags]


def test_placeholders_survive_translation():
    import re

    for entry in polib.pofile(str(PO)):
        found = sorted(re.findall(r"%\(\w+\)[sd]", entry.msgid))
        assert sorted(re.findall(r"%\(\w+\)[sd]", entry.msgstr)) == found, entry.msgid


@pytest.mark.skipif(
    shutil.which("msgfmt") is None, reason="gettext is not installed (apt-get install gettext)"
)
def test_the_catalog_compiles_and_the_committed_mo_is_current(tmp_path):
    out = tmp_path / "django.mo"
    result = subprocess.run(
        ["msgfmt", "--check", "-o", str(out), str(PO)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    compiled = {e.msgid: e.msgstr for e in polib.mofile(str(out))}
    committed = {e.msgid: e.msgstr for e in polib.mofile(str(MO))}
    assert compiled == committed, "run `make messages` to recompile django.mo"


@pytest.mark.skipif(
    shutil.which("xgettext") is None, reason="gettext is not installed (apt-get install gettext)"
)
def test_every_translatable_string_in_the_code_is_in_the_catalog(tmp_path):
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env.update({"DJANGO_DEBUG": "on", "DJANGO_SETTINGS_MODULE": "bsepar_panel.settings"})
    result = subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "fa", "--no-obsolete"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = polib.pofile(str(tmp_path / "locale" / "fa" / "LC_MESSAGES" / "django.po"))
    missing = [e.msgid for e in fresh if not e.msgstr]
    assert not missing, (
        f"strings missing from the fa catalog (run `make messages` and translate): {missing}"
    )


def test_pages_render_in_persian(alice_client):
    alice_client.post("/i18n/setlang/", {"language": "fa", "next": "/"})
    html = alice_client.get("/").content.decode()
    assert 'dir="rtl"' in html
    assert "پیشخوان" in html
    with translation.override("fa"):
        assert translation.gettext("Dashboard") == "پیشخوان"
