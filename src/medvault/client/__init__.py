"""A small Python SDK for the medvault REST API (v1).

Uploads and downloads stream in 1 MiB chunks, so a file of any size costs the same
memory. A download is written to a temporary file next to its destination and only
renamed into place once its SHA-256 matches the ETag the server sent: a broken or
tampered transfer never leaves a plausible-looking file behind.

    with VaultClient("https://vault.example", token) as vault:
        patient = vault.create_patient(system=NHS, value="9434765919", family_name="Doe",
                                       given_name="Jo", birth_date="1980-02-29")
        document = vault.upload("scan.pdf", patient_id=patient.id, document_type="11502-2")
        vault.download(document.id, "copy.pdf")

Large files go through the vault's tus 1.0.0 endpoint with :meth:`VaultClient.upload_resumable`:
one PATCH per ``chunk_size`` bytes, each carrying its SHA-256, and the whole file's SHA-256
declared up front. A broken request is retried from where the server says it stands, and
an interrupted upload continues later from its URL (``resume_url``).
"""

from medvault.client.errors import (
    VaultClientError,
    VaultConnectionError,
    VaultError,
    VaultSourceError,
    VaultTransferError,
)
from medvault.client.models import (
    Document,
    DocumentPage,
    DownloadProgress,
    DownloadResult,
    DownloadUrl,
    Patient,
    ResumableUpload,
    UploadProgress,
    UploadSource,
    Version,
)
from medvault.client.resumable import (
    CHUNK_BYTES,
    RESUMABLE_CHUNK_BYTES,
    RESUMABLE_RETRIES,
    RESUMABLE_RETRY_DELAY,
)
from medvault.client.vault import DEFAULT_TIMEOUT, VaultClient

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_TIMEOUT",
    "RESUMABLE_CHUNK_BYTES",
    "RESUMABLE_RETRIES",
    "RESUMABLE_RETRY_DELAY",
    "Document",
    "DocumentPage",
    "DownloadProgress",
    "DownloadResult",
    "DownloadUrl",
    "Patient",
    "ResumableUpload",
    "UploadProgress",
    "UploadSource",
    "VaultClient",
    "VaultClientError",
    "VaultConnectionError",
    "VaultError",
    "VaultSourceError",
    "VaultTransferError",
    "Version",
]
