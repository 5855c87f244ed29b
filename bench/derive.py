"""Previews and text extraction: what the confined child costs, per page and per document.

Three workloads, each run ``--runs`` times through ``medvault.processing.derive`` (the
child process with its resource limits, exactly as the worker's jobs call it) and,
as the baseline in the same run, through the same libraries in this process with the
same parameters (no child, no limits, no framing):

1. **preview**: a one-page text PDF and a 3000 x 2000 JPEG photo -> thumbnail + page
   WebP. Baseline: pypdfium2 / Pillow render, thumbnail and WebP encode in-process.
2. **text layer**: a ``--pages``-page PDF with a text layer -> its text. Baseline:
   pypdfium2 text of every page in-process. Reported as documents/s and pages/s.
3. **OCR**: a scanned page (an image-only PDF at 200 dpi) -> text with Tesseract.
   Baseline: the page rendered in-process at the same 300 dpi and piped to the same
   ``tesseract stdin stdout`` command. Reported as pages/s.

    .venv/bin/python bench/derive.py              # 5 runs each
    .venv/bin/python bench/derive.py --runs 2     # smoke test
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pypdfium2 as pdfium  # type: ignore[import-untyped]  # no stubs, no py.typed
from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from common import machine_info, median, new_figure, save_figure, write_json
from medvault.processing.derive import DeriveLimits, extract_text, render_preview

NAME = "derive"
PAGE_PX = 1200
THUMB_PX = 200
OCR_DPI = 300
WORDS = [
    *("patient", "echocardiogram", "report", "ventricle", "function", "normal"),
    *("ejection", "fraction", "mitral", "valve", "regurgitation", "mild"),
    *("follow", "review", "clinic", "letter", "discharge", "summary"),
]


def text_pdf(pages: int) -> bytes:
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    for number in range(pages):
        y = 800
        for line in range(40):
            words = [WORDS[(number * 7 + line * 3 + i) % len(WORDS)] for i in range(12)]
            page.drawString(50, y, " ".join(words))
            y -= 18
        page.showPage()
    page.save()
    return buffer.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def scanned_pdf() -> bytes:
    """An A4 page at 200 dpi with 30 lines of text, as an image only (no text layer)."""
    image = Image.new("L", (1654, 2339), 255)
    draw = ImageDraw.Draw(image)
    font = _font(34)
    for line in range(30):
        words = [WORDS[(line * 5 + i) % len(WORDS)] for i in range(7)]
        draw.text((120, 120 + line * 70), " ".join(words), fill=0, font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PDF", resolution=200)
    return buffer.getvalue()


def photo_jpeg() -> bytes:
    image = Image.effect_mandelbrot((3000, 2000), (-2.0, -1.0, 1.0, 1.0), 100).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# ------------------------------------------------------------------ in-process baselines


def _webp(image: Image.Image, bound: int) -> bytes:
    copy = image.copy()
    copy.thumbnail((bound, bound))
    buffer = io.BytesIO()
    copy.save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


def baseline_pdf_preview(data: bytes) -> None:
    document = pdfium.PdfDocument(data)
    page = document[0]
    width, height = page.get_size()
    scale = PAGE_PX / max(width, height)
    image = page.render(scale=scale).to_pil()
    _webp(image, PAGE_PX)
    _webp(image, THUMB_PX)


def baseline_image_preview(data: bytes) -> None:
    opened = Image.open(io.BytesIO(data))
    opened.draft("RGB", (PAGE_PX, PAGE_PX))
    image = opened.convert("RGB")
    _webp(image, PAGE_PX)
    _webp(image, THUMB_PX)


def baseline_text_layer(data: bytes) -> None:
    document = pdfium.PdfDocument(data)
    for page in document:
        page.get_textpage().get_text_range()


def baseline_ocr(data: bytes) -> None:
    document = pdfium.PdfDocument(data)
    image = document[0].render(scale=OCR_DPI / 72, grayscale=True).to_pil()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    subprocess.run(
        ["tesseract", "stdin", "stdout", "-l", "eng", "--psm", "3"],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
        # As the child runs it: one thread (5x faster than OpenMP's default here).
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )


# ------------------------------------------------------------------ measuring


def timed(action: Callable[[], object], runs: int) -> list[float]:
    action()  # warm the page cache and the imports, untimed
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", type=int, default=10, help="Pages of the text-layer PDF")
    args = parser.parse_args()

    limits = DeriveLimits()
    pdf1, pdfn, scan, photo = text_pdf(1), text_pdf(args.pages), scanned_pdf(), photo_jpeg()
    pdf_type, jpeg_type = "application/pdf", "image/jpeg"
    cases: dict[str, tuple[Callable[[], object], Callable[[], object], int]] = {
        "preview_pdf_page": (
            lambda: render_preview([pdf1], pdf_type, limits),
            lambda: baseline_pdf_preview(pdf1),
            1,
        ),
        "preview_jpeg_3000x2000": (
            lambda: render_preview([photo], jpeg_type, limits),
            lambda: baseline_image_preview(photo),
            1,
        ),
        "text_layer_pdf": (
            lambda: extract_text([pdfn], pdf_type, limits),
            lambda: baseline_text_layer(pdfn),
            args.pages,
        ),
        "ocr_scanned_page": (
            lambda: extract_text([scan], pdf_type, limits),
            lambda: baseline_ocr(scan),
            1,
        ),
    }
    results: dict[str, Any] = {}
    for name, (confined, baseline, pages) in cases.items():
        vault = timed(confined, args.runs)
        base = timed(baseline, args.runs)
        results[name] = {
            "pages": pages,
            "confined_seconds": [round(s, 4) for s in vault],
            "baseline_seconds": [round(s, 4) for s in base],
            "confined_median_s": round(median(vault), 4),
            "baseline_median_s": round(median(base), 4),
            "confined_pages_per_s": round(pages / median(vault), 2),
            "baseline_pages_per_s": round(pages / median(base), 2),
            "confined_vs_baseline_time": round(median(vault) / median(base), 2),
        }
        print(
            f"{name:24s} confined {median(vault) * 1000:8.1f} ms   in-process "
            f"{median(base) * 1000:8.1f} ms   x{median(vault) / median(base):.2f}"
        )
    ocr = extract_text([scan], pdf_type, limits)
    data = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "runs": args.runs,
            "text_pdf_pages": args.pages,
            "limits": limits.__dict__,
            "baseline": "the same libraries and parameters in this process, no child",
        },
        "results": results,
        # A check that the OCR workload is real work: words Tesseract read back.
        "ocr_words_found": sum(word in ocr.text.lower() for word in set(WORDS)),
        "ocr_words_total": len(set(WORDS)),
    }
    path = write_json(NAME, data)
    fig, ax = new_figure(1, width=8)
    names = list(results)
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs],
        [results[n]["confined_median_s"] * 1000 for n in names],
        0.4,
        label="confined child (medvault)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [results[n]["baseline_median_s"] * 1000 for n in names],
        0.4,
        label="in-process baseline",
    )
    ax.set_xticks(list(xs), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("ms per document (median)")
    ax.set_title(f"Previews and text, {args.runs} runs each")
    ax.legend(fontsize=8)
    png = save_figure(fig, NAME)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
