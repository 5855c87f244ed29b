"""The one typeface composed documents use, and the characters it can draw.

We embed Bitstream Vera, which ships *inside* the reportlab wheel, rather than a system
font or the unembedded PDF base-14 fonts:

* every app instance with the same reportlab version has byte-identical font files,
  which the preview → confirm hash check depends on (the slim container image has no
  system fonts at all);
* an embedded font makes the stored PDF look the same in every viewer, years later.

Vera covers Latin-1 and a little more (Ł, Œ, Š, €, ≤, ≥, typographic quotes and dashes).
A character outside it would be drawn as an empty box, so draft text containing one is
refused at validation time with a plain message instead of silently rendering boxes.
"""

from __future__ import annotations

from pathlib import Path

import reportlab
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

REGULAR = "MedvaultVera"
BOLD = "MedvaultVera-Bold"
ITALIC = "MedvaultVera-Italic"
BOLD_ITALIC = "MedvaultVera-BoldItalic"

_FONT_DIR = Path(reportlab.__file__).parent / "fonts"
_FILES = {
    REGULAR: "Vera.ttf",
    BOLD: "VeraBd.ttf",
    ITALIC: "VeraIt.ttf",
    BOLD_ITALIC: "VeraBI.ttf",
}


def _register() -> frozenset[str]:
    covered: set[str] | None = None
    for name, filename in _FILES.items():
        font = TTFont(name, str(_FONT_DIR / filename))
        pdfmetrics.registerFont(font)
        # A character counts only if every style has it: headings are bold, and a
        # table cell must not turn into a box just because its column is bold.
        chars = {chr(code) for code in font.face.charToGlyph if 0x20 <= code < 0xFFFE}
        covered = chars if covered is None else covered & chars
    pdfmetrics.registerFontFamily(
        REGULAR, normal=REGULAR, bold=BOLD, italic=ITALIC, boldItalic=BOLD_ITALIC
    )
    assert covered is not None
    return frozenset(covered)


# Registered at import, which Python serialises, never lazily on first render: replacing
# a registered TTFont while another thread is rendering with it would corrupt that
# thread's glyph subsets.
DRAWABLE: frozenset[str] = _register()


def first_undrawable(text: str) -> str | None:
    """The first character of ``text`` the font cannot draw (newline and tab excepted)."""
    for char in text:
        if char not in DRAWABLE and char not in "\n\t":
            return char
    return None
