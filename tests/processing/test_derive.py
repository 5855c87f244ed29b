"""Previews and text through the confined child: real pdfium, Pillow and tesseract.

Hostile documents must fail with their reason code and leave this process (the
"worker") able to derive the next document, with no child or tesseract left running.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pikepdf
import psutil
import pytest
from PIL import Image

from medvault.processing.derive import (
    DeriveFailed,
    DeriveLimits,
    ExtractedText,
    Preview,
    extract_text,
    render_preview,
)
from tests.processing import derive_samples as samples
from tests.support.services import unavailable

PDF, PNG = "application/pdf", "image/png"
MiB = 1024 * 1024
LIMITS = DeriveLimits()
DERIVATIONS: tuple[Callable[[Iterable[bytes], str, DeriveLimits], object], ...] = (
    render_preview,
    extract_text,
)


@pytest.fixture
def tesseract() -> str:
    binary = shutil.which("tesseract")
    if binary is None:
        unavailable("tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
    return binary


@pytest.fixture(scope="session")
def ten_thousand_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("derive") / "pages.pdf"
    samples.many_page_pdf(path, 10_000)
    return path


class Descendants:
    """Every process below this one seen while a derivation runs (child, tesseract)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._before = {child.pid for child in psutil.Process().children(recursive=True)}
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Descendants:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            for child in psutil.Process().children(recursive=True):
                if child.pid in self._before or child.pid in self.seen:
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.seen[child.pid] = (child.name(), child.create_time())

    def names(self) -> set[str]:
        return {name for name, _ in self.seen.values()}

    def still_running(self) -> list[str]:
        running = []
        for pid, (name, created) in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != "zombie":
                    running.append(name)
            except psutil.NoSuchProcess:
                pass
        return running


def _first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def assert_still_works() -> None:
    """The worker derives a good document right after a hostile one."""
    preview = render_preview(samples.chunked(samples.png(samples.words_image())), PNG, LIMITS)
    assert max(preview.width, preview.height) == 1200


def assert_webp_within(data: bytes, side: int) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        assert max(image.size) <= side
        return image.size


def assert_words(extracted: ExtractedText, words: tuple[str, ...] = samples.WORDS) -> None:
    for word in words:
        assert word.lower() in extracted.text.lower()


# --- Readable documents -----------------------------------------------------------------


def test_png_words_are_read_by_ocr_and_previewed(tesseract: str) -> None:
    data = samples.png(samples.words_image())

    extracted = extract_text(samples.chunked(data), PNG, LIMITS)
    preview = render_preview(samples.chunked(data), PNG, LIMITS)

    assert_words(extracted)
    assert (extracted.source, extracted.pages_read, extracted.page_count) == ("ocr", 1, 1)
    assert not extracted.truncated
    assert preview.media_type == "image/webp"
    assert preview.page_count == 1
    # 1700 x 600 scaled to 1200 on the long side.
    assert (preview.width, preview.height) == (1200, 424)
    assert assert_webp_within(preview.page, 1200) == (1200, 424)
    assert max(assert_webp_within(preview.thumbnail, 200)) == 200


def test_image_only_pdf_is_read_by_ocr(tesseract: str) -> None:
    data = samples.image_pdf(samples.words_image())

    extracted = extract_text(samples.chunked(data), PDF, LIMITS)
    preview = render_preview(samples.chunked(data), PDF, LIMITS)

    assert_words(extracted)
    assert (extracted.source, extracted.pages_read, extracted.page_count) == ("ocr", 1, 1)
    assert preview.page_count == 1
    assert max(preview.width, preview.height) == 1200


def test_text_layer_pdf_never_starts_tesseract(tesseract: str) -> None:
    lines = ("Haemoglobin zebracorn 13.5 g/dL measured", "Discharge summary quokka")
    data = samples.text_pdf(lines)
    # A language tesseract does not have: any OCR would fail the whole extraction,
    no_ocr = DeriveLimits(ocr_languages="zzz")
    # as it does for a scan, where OCR is needed.
    with pytest.raises(DeriveFailed) as failure:
        extract_text(samples.chunked(samples.image_pdf(samples.words_image())), PDF, no_ocr)
    assert failure.value.reason == "ocr-failed"

    with Descendants() as descendants:
        extracted = extract_text(samples.chunked(data), PDF, no_ocr)

    assert extracted.source == "text-layer"
    assert extracted.text == "\n".join(lines)
    assert "tesseract" not in descendants.names()


def test_mixed_pdf_reports_both_sources(tesseract: str) -> None:
    scan = samples.image_pdf(samples.words_image())
    typed = samples.text_pdf(("Referral letter for the cardiology outpatient clinic",))
    merged = io.BytesIO()
    with pikepdf.open(io.BytesIO(typed)) as pdf, pikepdf.open(io.BytesIO(scan)) as other:
        pdf.pages.extend(other.pages)
        pdf.save(merged)

    extracted = extract_text(samples.chunked(merged.getvalue()), PDF, LIMITS)

    assert extracted.source == "mixed"
    first, second = extracted.text.split("\f")
    assert "cardiology" in first
    assert "quokka" in second.lower()


def test_jpeg_preview_follows_exif_orientation() -> None:
    # Stored 1600 x 800 with orientation 6: shown upright, it is 800 x 1600.
    preview = render_preview(samples.chunked(samples.jpeg_rotated()), "image/jpeg", LIMITS)

    assert (preview.width, preview.height) == (600, 1200)
    assert assert_webp_within(preview.page, 1200) == (600, 1200)
    assert assert_webp_within(preview.thumbnail, 200) == (100, 200)


def test_ten_thousand_page_pdf_is_previewed_and_read_up_to_max_pages(
    ten_thousand_pages: Path,
) -> None:
    limits = DeriveLimits(max_pages=10)

    preview = render_preview(samples.file_chunks(ten_thousand_pages), PDF, limits)
    extracted = extract_text(samples.file_chunks(ten_thousand_pages), PDF, limits)

    assert preview.page_count == 10_000
    assert (extracted.pages_read, extracted.page_count, extracted.truncated) == (10, 10_000, True)
    # Blank pages: no text layer, and nothing on them for OCR to read.
    assert extracted.text == "\f" * 9
    assert extracted.source == "ocr"


def test_poster_sized_page_is_rendered_at_a_lower_scale() -> None:
    # 200 x 200 inches: 207 Mpx at 72 dpi, 3.6 Gpx at 300 dpi; max_pixels is 60 Mpx.
    poster = io.BytesIO()
    with pikepdf.new() as pdf:
        pdf.add_blank_page(page_size=(14_400, 14_400))
        pdf.save(poster)

    preview = render_preview(samples.chunked(poster.getvalue()), PDF, LIMITS)
    extracted = extract_text(samples.chunked(poster.getvalue()), PDF, LIMITS)

    assert (preview.width, preview.height) == (1200, 1200)
    assert (extracted.text, extracted.pages_read) == ("", 1)


# --- Hostile documents ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "limits", "reason"),
    [
        ("png-bomb", PNG, LIMITS, "too-many-pixels"),
        ("png-header-only", PNG, LIMITS, "too-many-pixels"),
        ("truncated-pdf", PDF, LIMITS, "unreadable"),
        ("not-a-png", PNG, LIMITS, "unreadable"),
        ("large-image", PNG, DeriveLimits(memory_bytes=200 * MiB), "memory"),
    ],
)
def test_hostile_document_fails_cleanly(
    name: str, content_type: str, limits: DeriveLimits, reason: str
) -> None:
    data = {
        # 30000 x 30000: 900 Mpx in a 110 kB file.
        "png-bomb": lambda: samples.png_bomb(30_000, 30_000),
        "png-header-only": lambda: samples.png_header_only(40_000, 40_000),
        # pdfium does not recover the first half of a PDF: no cross-reference table.
        "truncated-pdf": lambda: _first_half(samples.text_pdf(("Half a letter",))),
        "not-a-png": lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(4096),
        # 49 Mpx is within max_pixels, but 196 MB of RGB does not fit in 200 MiB.
        "large-image": lambda: samples.png_bomb(7000, 7000, rgb=True, level=1),
    }[name]()

    for derive in DERIVATIONS:
        with Descendants() as descendants, pytest.raises(DeriveFailed) as failure:
            derive(samples.chunked(data), content_type, limits)
        assert failure.value.reason == reason
        assert descendants.seen and not descendants.still_running()
    assert_still_works()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (DeriveLimits(cpu_seconds=2), "cpu"),
        (DeriveLimits(timeout_seconds=4.0), "timeout"),
    ],
    ids=["cpu", "timeout"],
)
def test_long_ocr_is_stopped_with_its_tesseract(
    tesseract: str, limits: DeriveLimits, reason: str
) -> None:
    # Eight dense pages: about ten CPU-seconds of tesseract, run one after the other.
    data = samples.image_pdf(*(samples.dense_page(seed) for seed in range(8)))

    with Descendants() as descendants, pytest.raises(DeriveFailed) as failure:
        extract_text(samples.chunked(data), PDF, limits)

    assert failure.value.reason == reason
    assert "tesseract" in descendants.names()
    assert descendants.still_running() == []
    assert_still_works()


@pytest.mark.parametrize("content_type", ["application/dicom", "text/plain", "application/zip"])
def test_unsupported_type_starts_no_child(content_type: str) -> None:
    def never_read() -> Iterator[bytes]:
        raise AssertionError("the document was read")
        yield b""  # pragma: no cover

    for derive in DERIVATIONS:
        with pytest.raises(DeriveFailed) as failure:
            derive(never_read(), content_type, LIMITS)
        assert failure.value.reason == "unsupported-type"


def test_document_over_max_input_bytes_is_refused_mid_stream() -> None:
    limits = DeriveLimits(max_input_bytes=1 * MiB)
    pulled = []

    def stream() -> Iterator[bytes]:
        for index in range(16):
            pulled.append(index)
            yield b"\x89PNG\r\n\x1a\n" + bytes(256 * 1024 - 8)

    with Descendants() as descendants, pytest.raises(DeriveFailed) as failure:
        render_preview(stream(), PNG, limits)

    assert failure.value.reason == "too-large"
    assert len(pulled) == 5  # stopped at the chunk that crossed the limit
    assert not descendants.still_running()
    # A first chunk over the limit is refused before any child starts.
    with pytest.raises(DeriveFailed) as failure:
        render_preview(iter([bytes(2 * MiB)]), PNG, limits)
    assert failure.value.reason == "too-large"
    assert_still_works()


def test_failure_message_quotes_no_content() -> None:
    with pytest.raises(DeriveFailed) as failure:
        extract_text(iter([b"%PDF-1.7 quokka zebracorn"]), PDF, LIMITS)
    assert failure.value.reason == "unreadable"
    assert str(failure.value) == "the document could not be parsed"


def test_limits_refuse_an_option_as_language() -> None:
    with pytest.raises(ValueError, match="ocr_languages"):
        DeriveLimits(ocr_languages="--tessdata-dir=/tmp")
    with pytest.raises(ValueError, match="max_pixels"):
        DeriveLimits(max_pixels=0)


# --- Nothing on disk --------------------------------------------------------------------


def test_no_plaintext_reaches_disk(
    tesseract: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.chdir(cwd)
    image = samples.text_image(("Xylophone ward round", "Summary for the record"))

    from_png = extract_text(samples.chunked(samples.png(image)), PNG, LIMITS)
    from_pdf = extract_text(samples.chunked(samples.image_pdf(image)), PDF, LIMITS)
    render_preview(samples.chunked(samples.png(image)), PNG, LIMITS)
    render_preview(samples.chunked(samples.image_pdf(image)), PDF, LIMITS)

    assert "xylophone" in from_png.text.lower()
    assert "xylophone" in from_pdf.text.lower()
    assert list(temp.rglob("*")) == []
    assert list(cwd.rglob("*")) == []


def test_child_runs_confined(monkeypatch: pytest.MonkeyPatch) -> None:
    """A live child, caught while it waits for the rest of the document."""
    monkeypatch.setenv("MEDVAULT_SECRET_KEY", "not-for-children")
    limits = DeriveLimits(memory_bytes=512 * MiB, cpu_seconds=30)
    data = samples.png(samples.words_image())
    waiting, inspected = threading.Event(), threading.Event()
    results: list[Preview] = []

    def stream() -> Iterator[bytes]:
        yield data[:100]
        waiting.set()
        inspected.wait(30)
        yield data[100:]

    worker = threading.Thread(target=lambda: results.append(render_preview(stream(), PNG, limits)))
    worker.start()
    try:
        assert waiting.wait(30)
        (child,) = [
            process
            for process in psutil.Process().children()
            if "medvault.processing.derive_child" in process.cmdline()
        ]
        limits_table = Path(f"/proc/{child.pid}/limits").read_text()
        environment = child.environ()
        session = os.getsid(child.pid)
    finally:
        inspected.set()
        worker.join(30)

    rows = {line[:26].strip(): line[26:].split() for line in limits_table.splitlines()[1:]}
    # No file may grow past 0 bytes: a write of plaintext would fail (EFBIG).
    assert rows["Max file size"][:2] == ["0", "0"]
    assert rows["Max core file size"][:2] == ["0", "0"]
    assert rows["Max address space"][:2] == [str(512 * MiB)] * 2
    assert rows["Max cpu time"][0] == "30"
    assert rows["Max open files"][:2] == ["64", "64"]
    assert session == child.pid  # its own session: a timeout kills its whole group
    assert not any(name.startswith("MEDVAULT_") for name in environment)
    assert environment["OMP_THREAD_LIMIT"] == "1"
    assert results and results[0].width == 1200
