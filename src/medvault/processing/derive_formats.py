"""Pages and frames to pixels and text, inside derive_child: pdfium, Pillow and tesseract.

Every size is checked before anything is decoded: an image's header size against
``max_pixels`` (Pillow's own bomb check is armed too, as an error), a PDF page's size
in points before it is rendered, at a scale chosen so the bitmap fits the pixel cap.

Tesseract runs as its CLI over pipes (``tesseract stdin stdout``), not through
pytesseract: pytesseract writes the image and the recognised text to temporary files,
which would put plaintext on disk (and under the child's RLIMIT_FSIZE=0 would fail).
Leptonica only ever parses a grayscale PNG encoded here, never the uploaded file. Each
tesseract gets what is left of the CPU budget, so a document costs ``cpu_seconds`` in
all, not that much per page.
"""

from __future__ import annotations

import io
import math
import re
import resource
import shutil
import signal
import subprocess
import unicodedata
import warnings
from dataclasses import dataclass, field

import pypdfium2 as pdfium  # type: ignore[import-untyped]  # ships no py.typed
from PIL import Image, ImageOps

from medvault.processing.derive import (
    IMAGE_FORMATS,
    PAGE_SIDE,
    TEXT_MAX_CHARS,
    THUMBNAIL_SIDE,
    DeriveLimits,
)

# A page whose text layer has fewer visible characters than this is a scan (perhaps
# with a stamped page number): it is rendered and read by OCR instead.
MIN_LAYER_CHARS = 20
# A rendered page whose gray levels span less than this is blank: tesseract would find
# nothing, and duplex scans are full of blank backs.
_BLANK_SPAN = 8
# Images claiming a resolution outside this range are left to tesseract's estimate.
_SANE_DPI = range(70, 2401)
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# C0 and C1 controls (the page separator \f among them) and lone surrogates.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_BLANK_LINES = re.compile(r"\n{3,}")


class Refused(Exception):
    """A handled failure, answered to the parent as ``reason`` (a derive.REASONS code)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PreviewImages:
    thumbnail: bytes
    page: bytes
    width: int
    height: int
    page_count: int


@dataclass
class PageTexts:
    page_count: int
    texts: list[str] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    chars: int = 0

    def add(self, text: str, source: str) -> bool:
        """Keep one page's text; False once TEXT_MAX_CHARS is reached (stop reading)."""
        text = normalise(text)
        room = TEXT_MAX_CHARS - self.chars
        if len(text) > room:
            return False
        self.texts.append(text)
        self.sources.add(source)
        self.chars += len(text) + 1
        return True

    def source(self) -> str:
        if len(self.sources) > 1:
            return "mixed"
        return next(iter(self.sources), "text-layer")


def configure_pillow(max_pixels: int) -> None:
    """Pillow's decompression-bomb check at our limit, as an error rather than a warning."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def normalise(text: str) -> str:
    """NFC, one newline style, no control characters, no runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = unicodedata.normalize("NFC", _CONTROLS.sub("", text))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# --- PDF -------------------------------------------------------------------------------


def pdf_preview(data: bytes, limits: DeriveLimits) -> PreviewImages:
    document = _open_pdf(data)
    page = document[0]
    width, height = _page_size(page)
    scale = _fit(width, height, PAGE_SIDE / max(width, height), limits.max_pixels)
    image = page.render(scale=scale, may_draw_forms=False).to_pil()
    return _preview_images(image, page_count=len(document))


def pdf_text(data: bytes, limits: DeriveLimits) -> PageTexts:
    document = _open_pdf(data)
    pages = PageTexts(page_count=len(document))
    for index in range(min(pages.page_count, limits.max_pages)):
        page = document[index]
        textpage = page.get_textpage()
        text = textpage.get_text_range()
        textpage.close()
        if sum(not char.isspace() for char in text) >= MIN_LAYER_CHARS:
            kept = pages.add(text, "text-layer")
        else:
            width, height = _page_size(page)
            scale = _fit(width, height, limits.ocr_dpi / 72, limits.max_pixels)
            image = page.render(scale=scale, grayscale=True, may_draw_forms=False).to_pil()
            kept = pages.add(ocr(image.convert("L"), round(scale * 72), limits), "ocr")
        page.close()
        if not kept:
            break
    return pages


def _open_pdf(data: bytes) -> pdfium.PdfDocument:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        raise Refused("unreadable") from None
    if len(document) < 1:
        raise Refused("unreadable")
    return document


def _page_size(page: pdfium.PdfPage) -> tuple[float, float]:
    width, height = page.get_size()
    if not all(math.isfinite(side) and side > 0 for side in (width, height)):
        raise Refused("unreadable")
    return width, height


def _fit(width: float, height: float, scale: float, max_pixels: int) -> float:
    """``scale``, lowered until a ``width`` x ``height`` page renders within ``max_pixels``.

    Any page renders within the cap at some scale; the 1 % margin absorbs pdfium's
    rounding of each side up to whole pixels.
    """
    if (width * scale) * (height * scale) > max_pixels:
        scale = math.sqrt(max_pixels / (width * height)) * 0.99
    if min(width, height) * scale < 1:
        # A sliver (say 1 x 14400 pt) shrinks below a pixel: an absurd page, not a document.
        raise Refused("unreadable")
    return scale


# --- Images ----------------------------------------------------------------------------


def image_preview(data: bytes, content_type: str, limits: DeriveLimits) -> PreviewImages:
    image = _open_image(data, content_type, limits.max_pixels)
    frames = _frame_count(image)
    if image.format == "JPEG":
        # Decode at 1/2 to 1/8 scale straight from the DCT data: the full size is never
        # held in memory for a preview.
        image.draft("RGB", (PAGE_SIDE, PAGE_SIDE))
    return _preview_images(_upright(image), page_count=frames)


def image_text(data: bytes, content_type: str, limits: DeriveLimits) -> PageTexts:
    image = _open_image(data, content_type, limits.max_pixels)
    # A TIFF's frames are pages (fax, scanner); a GIF's or WebP's are an animation.
    pages = PageTexts(page_count=_frame_count(image) if image.format == "TIFF" else 1)
    for index in range(min(pages.page_count, limits.max_pages)):
        image.seek(index)
        _check_pixels(image.size, limits.max_pixels)
        frame = _grayscale(_upright(image))
        if not pages.add(ocr(frame, _dpi(image), limits), "ocr"):
            break
    return pages


def _open_image(data: bytes, content_type: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=[IMAGE_FORMATS[content_type]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused("too-many-pixels") from None
    _check_pixels(image.size, max_pixels)
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise Refused("too-many-pixels")


def _frame_count(image: Image.Image) -> int:
    return max(1, int(getattr(image, "n_frames", 1)))


def _upright(image: Image.Image) -> Image.Image:
    """The current frame, decoded and turned as its EXIF orientation says."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused("too-many-pixels") from None
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # A broken EXIF block costs the rotation, not the page.
        return image


def _displayable(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_MODES:
        return _grayscale(image)
    if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def _grayscale(image: Image.Image) -> Image.Image:
    """8-bit gray; 16-bit and float images (X-ray exports) stretched to their own range."""
    if image.mode not in _WIDE_MODES:
        return image.convert("L")
    wide = image.convert("F")
    low, high = _extrema(wide)
    factor = 255 / (high - low) if high > low else 0.0
    return wide.point(lambda value: (value - low) * factor).convert("L")


def _extrema(image: Image.Image) -> tuple[float, float]:
    """Darkest and lightest value of a one-band image."""
    low, high = image.getextrema()
    assert isinstance(low, int | float) and isinstance(high, int | float)
    return low, high


def _dpi(image: Image.Image) -> int | None:
    dpi = image.info.get("dpi")
    if isinstance(dpi, tuple) and dpi and isinstance(dpi[0], int | float):
        return round(dpi[0]) if round(dpi[0]) in _SANE_DPI else None
    return None


def _preview_images(image: Image.Image, *, page_count: int) -> PreviewImages:
    page = _displayable(image)
    page.thumbnail((PAGE_SIDE, PAGE_SIDE))
    thumbnail = page.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return PreviewImages(
        thumbnail=_webp(thumbnail),
        page=_webp(page),
        width=page.width,
        height=page.height,
        page_count=page_count,
    )


def _webp(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


# --- OCR -------------------------------------------------------------------------------


def ocr(image: Image.Image, dpi: int | None, limits: DeriveLimits) -> str:
    """Tesseract's reading of an 8-bit gray ``image``, over pipes only."""
    low, high = _extrema(image)
    if high - low < _BLANK_SPAN:
        return ""
    binary = shutil.which("tesseract")
    if binary is None:
        raise Refused("ocr-failed")
    png = io.BytesIO()
    image.save(png, "PNG", compress_level=1)
    command = [binary, "stdin", "stdout", "-l", limits.ocr_languages, "--psm", "3"]
    if dpi is not None:
        command += ["--dpi", str(dpi)]
    budget = _remaining_cpu(limits)
    try:
        done = subprocess.run(  # noqa: S603  (a fixed binary; the -l value is validated)
            command,
            input=png.getvalue(),
            capture_output=True,
            close_fds=True,
            check=False,
            # This process is single-threaded, so the hook runs safely after fork.
            preexec_fn=lambda: _limit_cpu(budget),
        )
    except OSError:
        raise Refused("ocr-failed") from None
    if done.returncode in {-signal.SIGXCPU, -signal.SIGKILL}:
        raise Refused("cpu")
    if done.returncode != 0:
        # tesseract's stderr never leaves this process; only the verdict does.
        raise Refused("memory" if b"bad_alloc" in done.stderr else "ocr-failed")
    return done.stdout.decode("utf-8", "replace")


def _remaining_cpu(limits: DeriveLimits) -> int:
    """Whole CPU seconds left of the budget, counting this process and earlier tesseracts."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    left = limits.cpu_seconds - used
    if left <= 0:
        raise Refused("cpu")
    return math.ceil(left)


def _limit_cpu(seconds: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    ceiling = seconds + 1 if hard == resource.RLIM_INFINITY else min(seconds + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(seconds, ceiling), ceiling))
