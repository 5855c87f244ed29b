"""Small real PDFs for the scanning tests: plain, or with a script that runs on opening."""

from __future__ import annotations

import io
from collections.abc import Callable

import pikepdf


def real_pdf(build: Callable[[pikepdf.Pdf], None] | None = None) -> bytes:
    """A one-page PDF that qpdf parses (``pdf_bytes`` is random bytes behind a header)."""
    pdf = pikepdf.new()
    pdf.add_blank_page()
    if build is not None:
        build(pdf)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def script_on_open(pdf: pikepdf.Pdf) -> None:
    """JavaScript as the document's open action: both a script and an automatic action."""
    pdf.Root.OpenAction = pikepdf.Dictionary(
        S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)")
    )
