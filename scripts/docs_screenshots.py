"""Shrink the portal screenshots the browser scenarios took into small PNGs for docs/.

Run after the scenarios (``.venv/bin/python -m pytest tests/web/test_scenarios.py
tests/web/test_welsh_portal.py``):
``.venv/bin/python scripts/docs_screenshots.py``. It reads artifacts/screenshots/ and
writes docs/portal/, so the README's pictures always come from a real run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "artifacts" / "screenshots"
TARGET = ROOT / "docs" / "portal"
# (screenshot, width in the docs): desktop pages at half size, phone pages smaller.
PICKED = {
    "documents-desktop": 640,
    "document-desktop": 640,
    "upload-progress-desktop": 640,
    "compose-desktop": 640,
    "compose-preview-desktop": 640,
    "patient-record-desktop": 640,
    "admin-users-desktop": 640,
    "audit-desktop": 640,
    "audit-verify-desktop": 640,
    "welsh-documents-desktop": 640,
    "documents-phone": 260,
    "patient-documents-phone": 260,
}
MAX_HEIGHT = 1400


def shrink(name: str, width: int) -> Path:
    with Image.open(SOURCE / f"{name}.png") as image:
        scale = width / image.width
        resized = image.convert("RGB").resize(
            (width, round(image.height * scale)), Image.Resampling.LANCZOS
        )
        if resized.height > MAX_HEIGHT:
            resized = resized.crop((0, 0, width, MAX_HEIGHT))
        # A 64-colour palette keeps UI screenshots sharp at a fraction of the size.
        small = resized.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        out = TARGET / f"{name}.png"
        small.save(out, optimize=True)
    return out


def main() -> int:
    missing = [name for name in PICKED if not (SOURCE / f"{name}.png").exists()]
    if missing:
        print(f"run the browser scenarios first; missing: {', '.join(missing)}")
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, width in PICKED.items():
        out = shrink(name, width)
        print(f"{out.relative_to(ROOT)}  {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
