"""Text normalisation for search: Persian and Arabic forms compare equal.

Arabic yeh (ي, ى) and kaf (ك) become the Persian ی and ک, teh marbuta and heh forms are left
alone, zero-width non-joiners and joiners become nothing, diacritics (harakat, tanwin, shadda,
superscript alef) and tatweel are dropped, Arabic-Indic and Persian digits become ASCII, and the
result is case-folded.
"""

from __future__ import annotations

import re

_TABLE = str.maketrans(
    {
        "ي": "ی",
        "ى": "ی",
        "ك": "ک",
        "ۀ": "ه",
        "ة": "ه",
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ٱ": "ا",
        **{chr(0x06F0 + d): str(d) for d in range(10)},
        **{chr(0x0660 + d): str(d) for d in range(10)},
    }
)
# ZWNJ, ZWJ, tatweel, and the Arabic combining marks.
_DROP = re.compile("[\u200c\u200d\u0640\u064b-\u065f\u0670\u06d6-\u06ed]")
_SPACES = re.compile(r"\s+")


def normalize_for_search(text: str) -> str:
    """Return `text` in the form stored in search columns and used for queries."""
    text = _DROP.sub("", text.translate(_TABLE))
    return _SPACES.sub(" ", text).strip().casefold()
