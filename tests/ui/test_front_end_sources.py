"""The page scripts and the key form's template, read as source: one fetch helper, no URLs
spelled out in JavaScript, and the settings page renders ProviderKeyForm's own bound fields."""

from __future__ import annotations

import re
from pathlib import Path

from api_manager.forms import ProviderKeyForm
from tests.conftest import signed_in

JS = Path(__file__).resolve().parents[2] / "static" / "js"


def page_scripts() -> dict[str, str]:
    return {path.name: path.read_text() for path in JS.glob("*.js")}


def test_every_request_goes_through_the_one_helper_in_panel_js():
    calls = {name: len(re.findall(r"\bfetch\(", text)) for name, text in page_scripts().items()}
    assert calls.pop("panel.js") == 1, calls
    assert not any(calls.values()), calls
    for name, text in page_scripts().items():
        assert "X-CSRFToken" not in text or name == "panel.js", name
        # Uploads with progress (XMLHttpRequest) too: window.panel.upload.
        assert "XMLHttpRequest" not in text or name == "panel.js", name


def test_no_script_spells_out_a_panel_address():
    for name, text in page_scripts().items():
        assert not re.search(r"[\"'`]/(ai-chat|api-manager|api)/", text), name


def test_the_settings_page_renders_the_key_forms_own_fields(alice):
    html = signed_in(alice).get("/api-manager/settings/").content.decode()
    form = ProviderKeyForm()
    for name in form.fields:
        if name == "provider":
            for radio in form[name]:
                assert str(radio.tag()) in html, name
        else:
            assert str(form[name]) in html, name
    # Each field appears once: no hand-written copy beside it.
    for name in form.fields:
        assert html.count(f'name="{name}"') == (2 if name == "provider" else 1), name


def test_a_refused_key_comes_back_in_the_forms_fields_with_its_errors(alice):
    response = signed_in(alice).post(
        "/api-manager/keys/add/",
        {"provider": "anthropic", "label": "Bad", "api_key": "short", "base_url": "ftp://x"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    form = ProviderKeyForm(
        {"provider": "anthropic", "label": "Bad", "api_key": "short", "base_url": "ftp://x"}
    )
    assert not form.is_valid()
    assert str(form["label"]) in html
    assert str(form["base_url"].errors) in html
    # The chosen provider stays chosen.
    anthropic = next(radio for radio in form["provider"] if radio.data["value"] == "anthropic")
    assert "checked" in str(anthropic.tag())
    assert str(anthropic.tag()) in html
