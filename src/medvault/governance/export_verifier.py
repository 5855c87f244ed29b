"""Check a medvault export archive offline: file hashes, signatures and audit proofs.

Standalone on purpose: this file imports nothing from medvault, only the standard
library, ``cryptography`` (Ed25519) and ``pyzipper`` (AES ZIP), so it runs anywhere
Python does, without the vault, its database or its network. Every archive carries a
copy of it as ``verify_export.py``::

    pip install cryptography pyzipper
    python verify_export.py medvault-export.zip          # asks for the passphrase

(``medvault export verify`` runs the same code.) It checks, and names what fails:

1. ``manifest.json`` is signed (``manifest.sig``) by the vault's audit key, whose
   fingerprint it prints: compare it with the one the vault publishes
   (``GET /api/v1/audit/checkpoint``, ``public_key_pem``), or pass ``--key``.
2. Every file the manifest lists is there, with its size and SHA-256, and nothing else is.
3. The audit checkpoint is signed by the same key.
4. Each audit event about the record is in the log the checkpoint describes: its leaf
   hash and audit path lead to the checkpoint's root (RFC 6962 / RFC 9162 §2.1.3.2).
   Every event is about this patient, and as many as the manifest says.
5. Every document file matches the SHA-256 its FHIR DocumentReference states.

The Merkle check is written out here (25 lines) rather than imported, so this file
stands alone; the vault's tests check it against ``medvault.audit.merkle_proofs``.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyzipper
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

FORMAT = "medvault.export.v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# What the manifest's signature covers: this prefix, then the manifest's bytes. The
# prefix keeps a manifest signature from ever passing for a checkpoint signature.
SIGNED_PREFIX = (FORMAT + "\n").encode()
EVENTS = "audit/events.ndjson"
CHECKPOINT = "audit/checkpoint.txt"
BUNDLE = "fhir/bundle.json"
SHA256_EXTENSION = "urn:medvault:fhir:attachment-sha256"
CHECKPOINT_ORIGIN = "medvault audit log v1"
_CHUNK = 1024 * 1024


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, what: str) -> None:
        self.problems.append(what)


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_ok(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` lead from leaf ``index`` to ``root`` of ``size``?"""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for element in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = _node_hash(element, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = _node_hash(result, element)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _signed(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _hash_entry(archive: pyzipper.AESZipFile, name: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _parse_checkpoint(text: str) -> tuple[int, bytes, str, bytes]:
    """(tree size, root, the signed note, signature) of a witness-format checkpoint."""
    note, _, signature_line = text.partition("\n\n")
    lines = note.split("\n")
    if len(lines) != 4 or lines[0] != CHECKPOINT_ORIGIN:
        raise ValueError("not a medvault audit checkpoint")
    _, signature = signature_line.strip().rsplit(" ", 1)
    return int(lines[1]), base64.b64decode(lines[2]), note + "\n", base64.b64decode(signature)


def _check_files(archive: pyzipper.AESZipFile, manifest: dict[str, Any], report: Report) -> None:
    listed = {item["path"]: item for item in manifest.get("files", [])}
    present = set(archive.namelist()) - {MANIFEST, SIGNATURE}
    for name in sorted(present - listed.keys()):
        report.fail(f"{name}: in the archive but not in the manifest")
    for name, item in sorted(listed.items()):
        if name not in present:
            report.fail(f"{name}: listed in the manifest but missing")
            continue
        size, sha256 = _hash_entry(archive, name)
        if (size, sha256) != (item["size"], item["sha256"]):
            report.fail(f"{name}: its SHA-256 does not match the manifest (altered)")


def _check_events(
    archive: pyzipper.AESZipFile, manifest: dict[str, Any], key: Ed25519PublicKey, report: Report
) -> None:
    try:
        size, root, note, signature = _parse_checkpoint(archive.read(CHECKPOINT).decode())
    except (KeyError, ValueError) as exc:
        report.fail(f"{CHECKPOINT}: unreadable ({exc})")
        return
    if not _signed(key, signature, note.encode()):
        report.fail(f"{CHECKPOINT}: the signature does not verify")
    count = 0
    with archive.open(EVENTS) as stream:
        for number, line in enumerate(stream, start=1):
            count += 1
            entry = json.loads(line)
            leaf = entry["leaf"].encode("utf-8")
            path = [base64.b64decode(item) for item in entry["audit_path"]]
            if not inclusion_ok(_leaf_hash(leaf), entry["leaf_index"], size, path, root):
                report.fail(
                    f"{EVENTS} line {number} (event {entry.get('id')}): not in the signed log"
                )
            if json.loads(leaf)[8] != manifest["patient_id"]:
                report.fail(f"{EVENTS} line {number}: an event about someone else")
    expected = manifest.get("audit", {}).get("events")
    if count != expected:
        report.fail(f"{EVENTS}: {count} events, the manifest says {expected} (one removed?)")
    report.notes.append(f"{count} audit events, each proven in a signed log of {size} events")


def _check_documents(
    archive: pyzipper.AESZipFile, manifest: dict[str, Any], report: Report
) -> None:
    listed = {item["path"]: item["sha256"] for item in manifest.get("files", [])}
    bundle = json.loads(archive.read(BUNDLE))
    documents = 0
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "DocumentReference":
            continue
        if resource.get("subject", {}).get("reference") != f"Patient/{manifest['patient_id']}":
            report.fail(f"{BUNDLE}: DocumentReference/{resource.get('id')} is about someone else")
        for content in resource.get("content", []):
            attachment = content.get("attachment", {})
            url = attachment.get("url")
            stated = [
                ext.get("valueBase64Binary")
                for ext in attachment.get("extension", [])
                if ext.get("url") == SHA256_EXTENSION
            ]
            if url not in listed:
                report.fail(f"{BUNDLE}: DocumentReference/{resource.get('id')} names {url}, absent")
                continue
            documents += 1
            if stated and base64.b64decode(stated[0]).hex() != listed[url]:
                report.fail(f"{url}: does not match its DocumentReference's SHA-256")
    report.notes.append(f"{documents} document files, each matching its DocumentReference")


def verify(path: Path, passphrase: str, *, expected_key: str | None = None) -> Report:
    """Check the archive at ``path``; the report lists every problem found."""
    report = Report()
    try:
        archive = pyzipper.AESZipFile(path)
        archive.setpassword(passphrase.encode("utf-8"))
        manifest_bytes = archive.read(MANIFEST)
    except (OSError, RuntimeError, KeyError, pyzipper.BadZipFile) as exc:
        report.fail(f"cannot open the archive: {exc} (wrong passphrase?)")
        return report
    with archive:
        manifest = json.loads(manifest_bytes)
        key = load_pem_public_key(manifest["audit"]["public_key_pem"].encode())
        if not isinstance(key, Ed25519PublicKey):
            report.fail(f"{MANIFEST}: the audit key is not an Ed25519 key")
            return report
        report.notes.append(f"signed by the vault's audit key {fingerprint(key)}")
        if expected_key is not None and fingerprint(key) != expected_key:
            report.fail(f"{MANIFEST}: signed by {fingerprint(key)}, not {expected_key}")
        signature = (
            base64.b64decode(archive.read(SIGNATURE)) if SIGNATURE in archive.namelist() else b""
        )
        if manifest.get("format") != FORMAT:
            report.fail(f"{MANIFEST}: unknown format {manifest.get('format')!r}")
        if not _signed(key, signature, SIGNED_PREFIX + manifest_bytes):
            report.fail(f"{MANIFEST}: the signature does not verify (altered, or not the vault's)")
        _check_files(archive, manifest, report)
        _check_events(archive, manifest, key, report)
        _check_documents(archive, manifest, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a medvault export archive offline.")
    parser.add_argument("archive", type=Path)
    parser.add_argument("--passphrase-file", type=Path, help="else it is asked for")
    parser.add_argument("--key", help="the vault's audit key fingerprint to insist on")
    args = parser.parse_args(argv)
    passphrase = (
        args.passphrase_file.read_text().rstrip("\n")
        if args.passphrase_file
        else getpass.getpass("Passphrase: ")
    )
    report = verify(args.archive, passphrase, expected_key=args.key)
    for note in report.notes:
        print(f"ok: {note}")
    for problem in report.problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print("archive verified" if report.ok else "archive NOT verified", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
