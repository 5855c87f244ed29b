"""PDF active content is found wherever it hides, and plain PDFs are left alone."""

from __future__ import annotations

import io
from collections.abc import Callable

import pikepdf
import pytest

from medvault.documents.active_content import (
    RECOVERY_MAX_BYTES,
    ActiveContent,
    UnreadablePdf,
)
from medvault.documents.active_content import find_active_content as find_in


def find_active_content(source: io.BytesIO) -> frozenset[ActiveContent]:
    return find_in(source, size=source.getbuffer().nbytes)


def _pdf(
    build: Callable[[pikepdf.Pdf], None] | None = None, *, compress_objects: bool = True
) -> io.BytesIO:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    if build is not None:
        build(pdf)
    out = io.BytesIO()
    mode = (
        pikepdf.ObjectStreamMode.generate if compress_objects else pikepdf.ObjectStreamMode.disable
    )
    pdf.save(out, object_stream_mode=mode)
    out.seek(0)
    return out


def test_a_plain_pdf_has_none() -> None:
    assert find_active_content(_pdf()) == frozenset()


def test_an_open_action_that_only_goes_to_page_one_is_not_active() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        pdf.Root.OpenAction = pikepdf.Array([pdf.pages[0].obj, pikepdf.Name.Fit])

    assert find_active_content(_pdf(build)) == frozenset()


def test_javascript_on_open_is_found_inside_a_compressed_object_stream() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        pdf.Root.OpenAction = pikepdf.Dictionary(
            S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)")
        )

    source = _pdf(build)
    # The proof that a byte search would miss it: the name is compressed away.
    assert b"JavaScript" not in source.getvalue()
    assert find_active_content(source) == {ActiveContent.JAVASCRIPT, ActiveContent.AUTO_ACTION}


def test_a_launch_action_on_a_link_annotation_is_found() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        action = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
        link = pikepdf.Dictionary(
            Type=pikepdf.Name.Annot,
            Subtype=pikepdf.Name.Link,
            Rect=pikepdf.Array([0, 0, 10, 10]),
            A=action,
        )
        pdf.pages[0].obj.Annots = pdf.make_indirect(pikepdf.Array([pdf.make_indirect(link)]))

    assert find_active_content(_pdf(build, compress_objects=False)) == {ActiveContent.LAUNCH}


def test_page_additional_actions_and_embedded_files_are_found() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        pdf.pages[0].obj.AA = pikepdf.Dictionary(
            O=pikepdf.Dictionary(S=pikepdf.Name.URI, URI=pikepdf.String("https://x.test"))
        )
        pdf.attachments["setup.exe"] = pikepdf.AttachedFileSpec(pdf, b"MZ\x90\x00")

    assert find_active_content(_pdf(build)) == {
        ActiveContent.AUTO_ACTION,
        ActiveContent.EMBEDDED_FILE,
    }


def test_an_xfa_form_is_found() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        pdf.Root.AcroForm = pikepdf.Dictionary(
            Fields=pikepdf.Array(), XFA=pdf.make_stream(b"<xdp:xdp/>")
        )

    assert ActiveContent.XFA in find_active_content(_pdf(build))


@pytest.mark.parametrize("body", [b"%PDF-1.7\n garbage", b"%PDF-", b""])
def test_an_unparseable_pdf_is_its_own_error(body: bytes) -> None:
    with pytest.raises(UnreadablePdf):
        find_active_content(io.BytesIO(body))


def _without_xref(source: io.BytesIO) -> bytes:
    """The same PDF with its cross-reference table's offsets broken: qpdf must rebuild it."""
    body = source.getvalue()
    start = body.rindex(b"startxref")
    return body[:start] + b"startxref\n999999\n%%EOF\n"


def test_a_small_damaged_pdf_is_recovered_and_inspected() -> None:
    def build(pdf: pikepdf.Pdf) -> None:
        pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS="app.alert(1)")

    damaged = _without_xref(_pdf(build, compress_objects=False))
    # A reader would repair it and run the script, so the check must see it too.
    assert ActiveContent.JAVASCRIPT in find_in(io.BytesIO(damaged), size=len(damaged))


def test_a_large_damaged_pdf_is_unreadable_without_a_rebuild() -> None:
    damaged = _without_xref(_pdf(compress_objects=False))
    # Rebuilding scans the whole file (seconds per 100 MiB of junk): above the bound the
    # file is reported unreadable instead. The size is what the caller knows it to be.
    with pytest.raises(UnreadablePdf):
        find_in(io.BytesIO(damaged), size=RECOVERY_MAX_BYTES + 1)
    assert find_in(io.BytesIO(damaged), size=len(damaged)) == frozenset()
