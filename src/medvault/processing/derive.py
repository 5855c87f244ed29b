"""Previews and text from a document's plaintext, derived in a confined child process.

Rendering and OCR run parsers (pdfium, Pillow's decoders, leptonica, tesseract) over
bytes a stranger may have crafted. They run in a child process
(``medvault.processing.derive_child``), so a decompression bomb, a parser crash or a
page that renders forever costs that child, not the worker that asked. The child gets
rlimits before it runs a line of Python (``preexec_fn``): an address-space cap, a CPU
cap, no core files, few descriptors, and ``RLIMIT_FSIZE=0``, so neither it nor the
tesseract it starts can put a byte into any file. Plaintext goes in over the child's
stdin and results come back over its stdout: it never touches disk. The child leads a
new session, so a wall-clock deadline kills its whole process group, tesseract included.

The wire, in both directions one JSON line and then raw bytes:

- request: ``{"task", "content_type", "limits"}``, then the document until EOF;
- response: ``{"ok": true, ..., "parts": [n1, n2, ...]}`` followed by exactly
  ``n1 + n2 + ...`` bytes, or ``{"ok": false, "reason": code, "parts": []}``.

The parent trusts none of the response: its size is capped, every field is
type-checked, images must be WebP and text valid UTF-8. A failure carries a reason
code only: the child's stderr could quote the document, so it is read and dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from medvault.kit.process_groups import wait_for_group_exit

logger = logging.getLogger("medvault.processing.derive")

PDF = "application/pdf"
# Content type -> the one Pillow plugin allowed to parse it: a "PNG" is never handed
# to Pillow's other decoders, which would widen what a hostile file can reach.
IMAGE_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/tiff": "TIFF",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}
SUPPORTED_PREVIEW_TYPES = frozenset({PDF, *IMAGE_FORMATS})
SUPPORTED_TEXT_TYPES = frozenset({PDF, *IMAGE_FORMATS})

# Reason code -> the sentence str(DeriveFailed) gives: never any document content.
_MESSAGES = {
    "too-large": "the document is larger than the derivation limit",
    "unsupported-type": "previews and text are not derived for this content type",
    "unreadable": "the document could not be parsed",
    "too-many-pixels": "an image or page of the document exceeds the pixel limit",
    "too-many-pages": "the document has more pages than the derivation limit",
    "timeout": "deriving took longer than the time limit",
    "memory": "deriving needed more memory than the limit",
    "cpu": "deriving needed more CPU time than the limit",
    "crashed": "the derivation process failed",
    "ocr-failed": "text recognition failed",
}
REASONS = frozenset(_MESSAGES)

PREVIEW_MEDIA_TYPE = "image/webp"
THUMBNAIL_SIDE = 200
PAGE_SIDE = 1200
# Caps on what the parent accepts from the child. A 1200 px WebP is well under 1 MiB;
# the child stops collecting text at TEXT_MAX_CHARS (at most 4 UTF-8 bytes each).
_PREVIEW_MAX_OUTPUT = 8 * 1024 * 1024
TEXT_MAX_CHARS = 8 * 1024 * 1024
_TEXT_MAX_OUTPUT = 4 * TEXT_MAX_CHARS + 64 * 1024
_HEADER_MAX = 4096

# The child exits with this when it ran out of memory and could not even say so.
EXIT_MEMORY = 75
# Between the soft CPU limit (SIGXCPU, which ends a Python process) and SIGKILL.
CPU_GRACE_SECONDS = 2
_MAX_DESCRIPTORS = 64
# Tesseract's -l value: "eng", "eng+deu"; never something that reads as an option.
_LANGUAGES = re.compile(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*")
# Where the medvault package lives, so the child imports the very same code.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DeriveLimits:
    # Larger documents: DeriveFailed("too-large"); the child is stopped mid-stream.
    max_input_bytes: int = 256 * 1024 * 1024
    # Any decoded image or rendered page bigger is refused before decoding.
    max_pixels: int = 60_000_000
    # Pages read for text or OCR; beyond: the first max_pages, truncated=True.
    max_pages: int = 50
    memory_bytes: int = 1024 * 1024 * 1024  # RLIMIT_AS of the child (and of tesseract)
    cpu_seconds: int = 120  # RLIMIT_CPU: shared by the child and the tesseracts it starts
    timeout_seconds: float = 300.0  # wall clock; then the whole process group is killed
    ocr_languages: str = "eng"
    ocr_dpi: int = 300

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "ocr_languages" and not value > 0:
                raise ValueError(f"DeriveLimits.{field.name} must be positive")
        if not _LANGUAGES.fullmatch(self.ocr_languages):
            raise ValueError("DeriveLimits.ocr_languages must look like 'eng' or 'eng+deu'")


@dataclass(frozen=True)
class Preview:
    media_type: str  # "image/webp"
    thumbnail: bytes  # fits in 200x200 px
    page: bytes  # fits in 1200 px on the long side
    width: int  # of `page`
    height: int
    page_count: int | None  # PDFs: total pages; images: frames, or 1


@dataclass(frozen=True)
class ExtractedText:
    text: str  # pages separated by "\f"
    source: str  # "text-layer", "ocr" or "mixed"
    pages_read: int
    page_count: int
    # Not all of the document: more pages than max_pages, or more than TEXT_MAX_CHARS.
    truncated: bool


class DeriveFailed(Exception):
    """No preview or text; ``reason`` is a stable code from REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason = reason


def render_preview(chunks: Iterable[bytes], content_type: str, limits: DeriveLimits) -> Preview:
    """WebP previews of the first page or frame; raises DeriveFailed with a reason code."""
    media = _supported(content_type, SUPPORTED_PREVIEW_TYPES)
    header, parts = _derive("preview", chunks, media, limits, max_output=_PREVIEW_MAX_OUTPUT)
    if len(parts) != 2 or not all(_is_webp(part) for part in parts):
        raise _malformed()
    if header.get("media_type") != PREVIEW_MEDIA_TYPE:
        raise _malformed()
    page_count = header.get("page_count")
    return Preview(
        media_type=PREVIEW_MEDIA_TYPE,
        thumbnail=parts[0],
        page=parts[1],
        width=_int(header, "width", 1, PAGE_SIDE),
        height=_int(header, "height", 1, PAGE_SIDE),
        page_count=None if page_count is None else _int(header, "page_count", 1, sys.maxsize),
    )


def extract_text(chunks: Iterable[bytes], content_type: str, limits: DeriveLimits) -> ExtractedText:
    """The text layer of each page, else its OCR; raises DeriveFailed with a reason code."""
    media = _supported(content_type, SUPPORTED_TEXT_TYPES)
    header, parts = _derive("text", chunks, media, limits, max_output=_TEXT_MAX_OUTPUT)
    if len(parts) != 1:
        raise _malformed()
    try:
        text = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed() from None
    source = header.get("source")
    truncated = header.get("truncated")
    page_count = _int(header, "page_count", 0, sys.maxsize)
    pages_read = _int(header, "pages_read", 0, min(page_count, limits.max_pages))
    if source not in {"text-layer", "ocr", "mixed"} or not isinstance(truncated, bool):
        raise _malformed()
    return ExtractedText(
        text=text,
        source=str(source),
        pages_read=pages_read,
        page_count=page_count,
        truncated=truncated,
    )


def _supported(content_type: str, supported: frozenset[str]) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in supported:
        raise DeriveFailed("unsupported-type")
    return media


def _derive(
    task: str,
    chunks: Iterable[bytes],
    content_type: str,
    limits: DeriveLimits,
    *,
    max_output: int,
) -> tuple[dict[str, Any], list[bytes]]:
    pending = iter(chunks)
    # The child starts with the first bytes: nothing to parse costs no process.
    first = next((chunk for chunk in pending if chunk), b"")
    if not first:
        raise DeriveFailed("unreadable")
    if len(first) > limits.max_input_bytes:
        raise DeriveFailed("too-large")
    request = {"task": task, "content_type": content_type, "limits": asdict(limits)}
    child = _ConfinedChild(limits, max_output=max_output)
    try:
        child.feed(json.dumps(request).encode() + b"\n", _chained(first, pending))
    except BaseException:
        # The caller's iterator raised (a store failure): a half document is not parsed.
        child.kill("abandoned")
        raise
    finally:
        returncode, cpu_used = child.wait()
    logger.debug("derive child (%s) exited with status %s", task, returncode)
    if returncode != 0:
        raise DeriveFailed(child.failure(returncode, cpu_used))
    header, parts = _parse(child.output)
    if header.get("ok") is not True:
        reason = header.get("reason")
        raise DeriveFailed(reason) if reason in REASONS else _malformed()
    return header, parts


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class _ConfinedChild:
    """One run of derive_child: feeding stdin while threads drain stdout and stderr.

    Draining concurrently is what keeps a chatty child from blocking on a full pipe
    while we block writing its stdin. A timer kills the process group at the deadline;
    ``_lock`` orders that kill against reaping, so a group id is never signalled after
    the kernel may have handed it to an unrelated process.
    """

    def __init__(self, limits: DeriveLimits, *, max_output: int) -> None:
        self._limits = limits
        self._max_output = max_output
        self._lock = threading.Lock()
        self._reaped = False
        self.killed_for: str | None = None
        self.output = bytearray()
        rlimits = _rlimits(limits)
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-m", "medvault.processing.derive_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            env=_child_environment(),
            start_new_session=True,
            # Limits apply before the interpreter starts; the hook only calls setrlimit.
            preexec_fn=lambda: _confine(rlimits),
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self._process.stderr,), daemon=True),
        ]
        self._deadline = threading.Timer(limits.timeout_seconds, self.kill, args=("timeout",))
        self._deadline.daemon = True
        for thread in (*self._readers, self._deadline):
            thread.start()

    def feed(self, request: bytes, chunks: Iterable[bytes]) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        total = 0
        try:
            stdin.write(request)
            for chunk in chunks:
                total += len(chunk)
                if total > self._limits.max_input_bytes:
                    self.kill("too-large")
                    return
                stdin.write(chunk)
        except BrokenPipeError:
            # The child died (a limit, a crash, the deadline): its exit status says why.
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def kill(self, reason: str) -> None:
        with self._lock:
            if self._reaped:
                return
            if self.killed_for is None:
                self.killed_for = reason
            _kill_group(self._process.pid)

    def wait(self) -> tuple[int, float]:
        """Exit status and CPU seconds of the child, once it and its group are gone."""
        for reader in self._readers:
            reader.join()
        pid = self._process.pid
        # Wait without reaping: while the child is a zombie its pid, and so the group
        # id, cannot be reused, so killing leftovers (an orphaned tesseract) is safe.
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            # Reaped behind our back (a SIGCHLD handler waiting on any pid): the status
            # is lost and the group id may be reused, so it is not signalled again.
            with self._lock:
                self._deadline.cancel()
                self._reaped = True
            self._process.returncode = -1
            return -1, 0.0
        with self._lock:
            self._deadline.cancel()
            _kill_group(pid)
            # SIGKILL arrives asynchronously: an orphaned tesseract may still be exiting.
            # The child, unreaped, keeps the group id from being reused meanwhile.
            if not wait_for_group_exit(pid):
                logger.warning("a derivation's process group outlived SIGKILL for 2 s")
            _, status, usage = os.wait4(pid, 0)
            self._reaped = True
        self._process.returncode = os.waitstatus_to_exitcode(status)
        return self._process.returncode, usage.ru_utime + usage.ru_stime

    def failure(self, returncode: int, cpu_used: float) -> str:
        """The reason code for a child that did not exit 0."""
        if self.killed_for in {"timeout", "too-large"}:
            return self.killed_for
        if returncode == -signal.SIGXCPU:
            return "cpu"
        if returncode == EXIT_MEMORY:
            return "memory"
        if returncode == -signal.SIGKILL and self.killed_for is None:
            # Not our kill: the CPU hard limit, else the kernel's OOM killer.
            return "cpu" if cpu_used >= self._limits.cpu_seconds else "memory"
        return "crashed"

    def _collect(self, stream: IO[bytes]) -> None:
        fd = stream.fileno()
        while data := os.read(fd, 64 * 1024):
            if len(self.output) + len(data) > self._max_output:
                self.kill("output")
                self.output.clear()
                self._max_output = 0
                continue
            self.output += data
        stream.close()

    @staticmethod
    def _drain(stream: IO[bytes]) -> None:
        # Read and dropped: stderr may quote the document (a parser's warning, a traceback).
        fd = stream.fileno()
        while os.read(fd, 64 * 1024):
            pass
        stream.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _rlimits(limits: DeriveLimits) -> list[tuple[int, tuple[int, int]]]:
    """The child's limits, computed before fork so the forked child only calls setrlimit."""
    wanted = {
        resource.RLIMIT_AS: (limits.memory_bytes, limits.memory_bytes),
        resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_SECONDS),
        # No file may grow past 0 bytes: plaintext cannot reach disk, by the kernel's word.
        resource.RLIMIT_FSIZE: (0, 0),
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NOFILE: (_MAX_DESCRIPTORS, _MAX_DESCRIPTORS),
    }
    result = []
    for kind, (soft, hard) in wanted.items():
        # Never above the worker's own hard limit, which setrlimit would refuse.
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        result.append((kind, (soft, hard)))
    return result


def _confine(rlimits: list[tuple[int, tuple[int, int]]]) -> None:
    for kind, values in rlimits:
        resource.setrlimit(kind, values)


def _child_environment() -> dict[str, str]:
    """What Python and tesseract need, and nothing of the worker's (no MEDVAULT_* secrets)."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "OMP_THREAD_LIMIT": "1",  # tesseract's OpenMP: one thread, CPU limit meaningful
        "PYTHONPATH": str(_PACKAGE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    for name in ("TMPDIR", "TESSDATA_PREFIX"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _parse(output: bytes | bytearray) -> tuple[dict[str, Any], list[bytes]]:
    line, newline, _ = bytes(output[: _HEADER_MAX + 1]).partition(b"\n")
    if not newline:
        raise _malformed()
    try:
        header = json.loads(line)
    except ValueError:
        raise _malformed() from None
    if not isinstance(header, dict):
        raise _malformed()
    sizes = header.get("parts")
    body = memoryview(output)[len(line) + 1 :]
    if not isinstance(sizes, list) or not all(_is_size(size) for size in sizes):
        raise _malformed()
    if sum(sizes) != len(body):
        raise _malformed()
    parts, start = [], 0
    for size in sizes:
        parts.append(bytes(body[start : start + size]))
        start += size
    return header, parts


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int(header: dict[str, Any], name: str, low: int, high: int) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _malformed()
    return value


def _is_webp(data: bytes) -> bool:
    return len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _malformed() -> DeriveFailed:
    logger.debug("derive child answered outside the protocol")
    return DeriveFailed("crashed")
