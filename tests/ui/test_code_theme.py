"""The code colours: generated, committed as generated, and AA in both themes."""

from __future__ import annotations

import re
from pathlib import Path

from tests.ui.code_theme import AA, DARK, LIGHT, contrast, stylesheet

CSS = Path(__file__).resolve().parents[2] / "static" / "css"


def test_the_committed_stylesheet_is_the_generated_one():
    assert (CSS / "pygments.css").read_text() == stylesheet(), (
        "run: .venv/bin/python -m tests.ui.code_theme > static/css/pygments.css"
    )


def test_every_code_colour_reaches_aa_on_its_themes_background():
    text = (CSS / "pygments.css").read_text()
    light_block = re.search(r"^:root \{(.*?)\}", text, re.M).group(1)
    dark_block = re.search(r"^:root\[data-theme=dark\] \{(.*?)\}", text, re.M).group(1)
    for block, background in ((light_block, LIGHT[1]), (dark_block, DARK[1])):
        colours = re.findall(r"--[\w-]+: (#[0-9a-fA-F]{3,6});", block)
        assert len(colours) > 20
        for colour in colours:
            assert contrast(colour, background) >= AA, (colour, background)


def test_the_backgrounds_are_the_panels():
    panel = (CSS / "panel.css").read_text()
    assert f"--code-bg: {LIGHT[1]}" in panel
    assert f"--code-bg: {DARK[1]}" in panel
