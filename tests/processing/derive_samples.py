"""Documents for the derivation tests: readable ones with known words, and hostile ones.

The hostile ones are built the way an attacker would, without the test holding their
decoded size: a bomb PNG is zlib-streamed row by row, a giant one is a header alone.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pikepdf
from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
# Words tesseract reads reliably at 48 px, and unlikely to appear by accident.
WORDS = ("Haemoglobin", "zebracorn", "Discharge", "quokka")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if DEJAVU.exists():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def text_image(lines: tuple[str, ...], size: tuple[int, int] = (1700, 600)) -> Image.Image:
    """Black 48 px text on white, one line every 120 px."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((60, 80 + 120 * row), line, font=font(48), fill=0)
    return image


def words_image() -> Image.Image:
    return text_image((f"{WORDS[0]} {WORDS[1]} 13.5 g/dL", f"{WORDS[2]} summary {WORDS[3]}"))


def dense_page(seed: int = 0) -> Image.Image:
    """A letter page at 300 dpi covered in text: several CPU-seconds of tesseract."""
    lines = tuple(
        f"Line {seed}-{row}: patient observed, {WORDS[row % 4]} level stable, plan reviewed"
        for row in range(26)
    )
    return text_image(lines, size=(2550, 3300))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def image_pdf(*images: Image.Image) -> bytes:
    """A scan: pages that are pictures of text, with no text layer."""
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=200, save_all=True, append_images=list(images[1:]))
    return out.getvalue()


def text_pdf(lines: tuple[str, ...]) -> bytes:
    """A born-digital PDF: the words are in its text layer."""
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    for row, line in enumerate(lines):
        pdf.drawString(72, 760 - 20 * row, line)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def jpeg_rotated(size: tuple[int, int] = (1600, 800), orientation: int = 6) -> bytes:
    """A landscape-stored JPEG whose EXIF says "rotate 90°" (a phone held upright)."""
    image = Image.new("RGB", size, (200, 220, 240))
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 4, size[1] // 4), fill=(200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def many_page_pdf(path: Path, pages: int) -> None:
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    pdf.save(path)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _ihdr(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))


def png_bomb(width: int, height: int, *, rgb: bool = False, level: int = 9) -> bytes:
    """A complete PNG of zero rows, compressed as it is generated (1-bit gray or RGB).

    30000 x 30000 at 1 bit is 112 MB of pixel data in about 110 kB of file.
    """
    row = b"\0" * (1 + (width * 3 if rgb else (width + 7) // 8))
    packer = zlib.compressobj(level)
    compressed = [packer.compress(row) for _ in range(height)]
    compressed.append(packer.flush())
    idat = b"".join(compressed)
    ihdr = _ihdr(width, height, 8 if rgb else 1, 2 if rgb else 0)
    return _PNG_SIGNATURE + ihdr + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A valid signature and IHDR (correct CRC) claiming a huge image, then a stub IDAT."""
    return _PNG_SIGNATURE + _ihdr(width, height, 8, 2) + _chunk(b"IDAT", zlib.compress(b"\0"))


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def file_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk
