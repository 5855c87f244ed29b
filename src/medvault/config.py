"""All runtime configuration, read from ``MEDVAULT_*`` environment variables.

Defaults give a zero-setup vault (SQLite files and a blob folder under ``DATA_DIR``).
With ``MEDVAULT_ENV=production`` the settings refuse to start on generated or
placeholder secrets, because several stateless instances must share the same keys.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from medvault.kit.time_zones import known_zone

MiB = 1024 * 1024

DEFAULT_ALLOWED_TYPES = (
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "application/dicom",
)

# Values people paste from examples; production must never run on them.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "default", "password", "medvault", "example"}
)


class ConfigurationError(RuntimeError):
    """The settings cannot be used; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDVAULT_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("medvault-data")

    database_url: str | None = Field(
        default=None, description="Clinical database; default sqlite file in DATA_DIR"
    )
    auth_database_url: str | None = Field(
        default=None, description="Auth database; default sqlite file in DATA_DIR"
    )
    # A streaming replica of the clinical database (PostgreSQL) for lists, searches,
    # metadata and audit queries; README "Read replicas" says which reads and when.
    database_replica_url: str | None = None
    # PostgreSQL connections each process keeps open per database (and replica); bursts
    # may open twice as many more, so a process holds up to 9 x this (plus the principal
    # cache's 16): the sum over instances and workers must fit the server's limit.
    database_pool_size: int = Field(default=10, ge=1, le=100)
    # A replica further behind than this is not read from (the primary answers).
    replica_max_lag_seconds: float = Field(default=5.0, ge=0, le=3600)
    # After a replica failed to answer, it is left alone this long.
    replica_retry_seconds: float = Field(default=5.0, ge=0, le=3600)
    patient_database_url: str | None = Field(
        default=None, description="Patient (demographics) database; default sqlite file in DATA_DIR"
    )

    storage_url: str | None = Field(
        default=None,
        description="file:///path, s3://bucket/prefix or azure://container/prefix; "
        "default DATA_DIR/blobs",
    )
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_part_size: int = Field(default=8 * MiB, ge=5 * MiB, le=512 * MiB)
    # Azure Blob Storage (azure://): a connection string, or the account URL with a key,
    # a SAS token or neither (Entra ID through azure-identity's DefaultAzureCredential).
    azure_connection_string: str | None = Field(default=None, repr=False)
    azure_account_url: str | None = None
    azure_account_key: str | None = Field(default=None, repr=False)
    azure_sas_token: str | None = Field(default=None, repr=False)
    # Blocks are staged as the stream arrives; one block is buffered per writer.
    azure_block_size: int = Field(default=8 * MiB, ge=1 * MiB, le=256 * MiB)

    max_upload_bytes: int = Field(default=50 * MiB, gt=0)
    # FHIR Binary as base64 JSON costs 4/3 of the file and a client-side decode: above
    # this size only the raw form is served.
    fhir_binary_json_max_bytes: int = Field(default=5 * MiB, ge=0)
    # SHA-1 of every upload for FHIR's Attachment.hash: one more hash over every byte
    # (measured on 2 cores: raw uploads 0.58-0.70x of the baseline with it, 0.81-0.92x without).
    fhir_attachment_sha1: bool = True
    allowed_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_ALLOWED_TYPES
    # Resumable (tus) uploads: an unfinished upload expires this long after its last
    # request, and the reconciler removes it; a finished one answers HEAD until then.
    upload_expiry_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    # The lease a request appending to an upload holds: a crashed holder's lease runs
    # out after this, and the client's retry (tus clients retry 423) takes over.
    upload_lock_seconds: int = Field(default=30, ge=2, le=600)
    # A long resumable request records its progress at least every this many bytes: a
    # crash mid-request loses at most this much (each record is a chunk and a commit).
    upload_checkpoint_bytes: int = Field(default=64 * MiB, ge=1 * MiB, le=1024 * MiB)

    # Records governance (README "Records governance"). A TOML file of retention classes
    # and document-type mappings, added to the NHS Code preset; unset: the preset alone.
    retention_file: Path | None = None
    # How often the appraisal job recomputes retention dates and lists what is past them.
    appraisal_interval_seconds: int = Field(default=86400, ge=10, le=30 * 86400)
    # 2: destruction needs approvals from two different people (a two-person rule).
    destruction_approvals: int = Field(default=1, ge=1, le=2)
    # A patient's export archive (and its one-time link) is deleted this long after the
    # request, downloaded or not.
    export_ttl_seconds: int = Field(default=7 * 86400, ge=600, le=30 * 86400)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="External base URL used in signed links, e.g. https://vault.example",
    )

    keyring: str | None = Field(default=None, description="KEK keyring JSON (else keyring file)")
    keyring_file: Path | None = None
    secret_key: str | None = Field(default=None, description="URL-signing secret (else file)")

    segment_size: int = Field(default=64 * 1024, ge=4096, le=16 * MiB)
    download_url_ttl_seconds: int = Field(default=3600, ge=1, le=86400)
    download_url_max_ttl_seconds: int = Field(default=86400, ge=1, le=86400)

    log_level: str = "INFO"

    # Identity and sessions
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_seconds: int = Field(default=14 * 86400, ge=300, le=90 * 86400)
    # How long a process may reuse a resolved principal (0: look it up on every request).
    # Revocations end it at once through the auth epoch; this bounds anything else.
    principal_cache_seconds: int = Field(default=10, ge=0, le=300)
    jwt_private_key: str | None = Field(default=None, description="Ed25519 PEM (else file)")
    bootstrap_admin_password: str | None = Field(
        default=None, description="First-start admin password (else one is generated)"
    )
    patient_self_upload: bool = True

    # Rate limits (the `limits` library's notation); Redis makes them cluster-wide.
    redis_url: str | None = None
    login_rate_limit_account: str = "5/minute"
    login_rate_limit_ip: str = "30/minute"
    upload_rate_limit: str = "600/minute"

    # Web hardening
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Request and server limits (see README "Security model"). Upload routes keep
    # MAX_UPLOAD_BYTES; every other request body is cut at MAX_JSON_BODY_BYTES while it
    # streams, so an anonymous client cannot make the server buffer megabytes of JSON.
    max_json_body_bytes: int = Field(default=1 * MiB, ge=1024, le=64 * MiB)
    # Header bytes per request (the server's bound on an incomplete head, and an exact
    # check in the app).
    max_header_bytes: int = Field(default=16 * 1024, ge=4096, le=1 * MiB)
    # argon2id needs 64 MiB per verification: this many at once, then 503 + Retry-After.
    max_concurrent_password_checks: int = Field(default=4, ge=1, le=256)
    # Server processes `medvault serve` runs on this host; unset: one per CPU core.
    server_workers: int | None = Field(default=None, ge=1, le=64)
    # Open connections + running requests (per server process) before uvicorn answers 503.
    server_limit_concurrency: int = Field(default=1000, ge=10)
    server_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # Seconds a client has to send a complete request head (slowloris guard).
    server_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Proxies whose X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips).
    # Empty: nobody, not even 127.0.0.1, can set the client address a rate limit keys on.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    # Portal (web UI) sessions
    web_session_idle_seconds: int = Field(default=900, ge=60, le=86400)
    web_session_max_seconds: int = Field(default=12 * 3600, ge=300, le=7 * 86400)
    web_break_glass_seconds: int = Field(default=1800, ge=60, le=12 * 3600)
    portal_name: str = Field(
        default="medvault", max_length=100, description="Shown in the portal and PDF headers"
    )
    # Times are shown in each user's own zone, read from their browser at login; this
    # one applies until a user has logged in with script enabled.
    portal_time_zone: str = Field(default="UTC", description="IANA name, e.g. Europe/London")
    # The portal's words: a visitor's own choice (the footer) wins, then the browser's
    # languages, then this one.
    portal_language: Literal["en", "cy"] = Field(
        default="en", description="en (English) or cy (Cymraeg)"
    )

    # Tamper-evident audit log
    audit_signing_key: str | None = Field(default=None, description="Ed25519 PEM (else file)")
    audit_witness_dir: Path | None = None
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0, le=60)

    # Background jobs (README "Jobs, scanning and the reconciler")
    # `medvault serve` runs one worker thread beside the web server; turn it off when
    # `medvault worker` processes run elsewhere.
    embedded_worker: bool = True
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    # Malware scanning: clamd's address (tcp://host:port or unix:///path). Unset: nothing
    # is scanned and versions show "not-scanned".
    clamd_url: str | None = None
    clamd_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    # blocking: content is refused (503 + Retry-After) until its scan says clean.
    # async: content is served while the scan is pending; infected is never served.
    scan_policy: Literal["blocking", "async"] = "blocking"
    # PDFs with JavaScript, automatic actions, launch actions, embedded files or XFA are
    # always flagged; with this on they are refused at upload (422).
    refuse_active_pdf: bool = False

    # The reconciler removes orphan blobs and unfinished writes older than the grace
    # period; an upload must commit within half of it (see processing/reconcile.py).
    reconcile_grace_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    reconcile_interval_seconds: int = Field(default=3600, ge=10, le=7 * 86400)
    # FHIR Binary created but never described by a DocumentReference: removed after this.
    binary_draft_ttl_seconds: int = Field(default=7 * 86400, ge=60, le=365 * 86400)
    # FHIR Bulk Data exports: their encrypted NDJSON files are deleted after this.
    bulk_export_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    # The integrity scrub re-reads every version once per period, at most this fast.
    scrub_period_days: int = Field(default=30, ge=1, le=3650)
    scrub_max_bytes_per_second: int = Field(default=20 * MiB, ge=64 * 1024)

    # Previews and text extraction (README "Previews, text and search"). Every document is
    # parsed in a child process with these limits, so a hostile file cannot take down a
    # worker; what a limit stops is recorded on the version.
    previews: bool = True
    # MEDVAULT_FULLTEXT=off: no text is extracted and no content goes into the search
    # index (titles, descriptions and file names are still searchable).
    fulltext: bool = True
    # Tesseract language codes joined by "+", e.g. "eng+deu" (each needs its
    # tesseract-ocr-<lang> package).
    ocr_languages: str = Field(default="eng", pattern=r"^[a-z_]{3,8}(\+[a-z_]{3,8})*$")
    # PostgreSQL text search configuration for the index (e.g. english, german, simple).
    search_text_config: str = Field(default="english", pattern=r"^[a-z_]{1,63}$")
    # A search ranks the newest this many of the caller's matching documents; a search
    # matching more says so (README "Previews, text and search": why a window).
    search_rank_window: int = Field(default=1000, ge=50, le=100_000)
    # Pages read for text (and OCRed when a page has no text layer).
    derive_max_pages: int = Field(default=50, ge=1, le=10000)
    # Pixels of any decoded image or rendered page; larger ones are refused, not decoded.
    derive_max_pixels: int = Field(default=60_000_000, ge=1_000_000, le=1_000_000_000)
    # Bytes of a document read into the child; larger documents get no preview or text.
    derive_max_input_bytes: int = Field(default=256 * MiB, ge=1 * MiB)
    derive_memory_mib: int = Field(default=1024, ge=128, le=64 * 1024)
    derive_cpu_seconds: int = Field(default=120, ge=1, le=3600)
    derive_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)

    @field_validator(
        "database_url",
        "auth_database_url",
        "database_replica_url",
        "patient_database_url",
        "storage_url",
        "s3_endpoint_url",
        "s3_region",
        "azure_connection_string",
        "azure_account_url",
        "azure_account_key",
        "azure_sas_token",
        "public_url",
        "keyring",
        "keyring_file",
        "secret_key",
        "clamd_url",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `MEDVAULT_DATABASE_URL=` in an env file must not silently mean "use SQLite".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("portal_time_zone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        if known_zone(value) is None:
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/London)")
        return value

    @model_validator(mode="after")
    def _check_ttl(self) -> Self:
        if self.download_url_ttl_seconds > self.download_url_max_ttl_seconds:
            raise ValueError("DOWNLOAD_URL_TTL_SECONDS exceeds DOWNLOAD_URL_MAX_TTL_SECONDS")
        return self

    @model_validator(mode="after")
    def _check_replica(self) -> Self:
        if self.database_replica_url is None:
            return self
        for name, url in (("", self.database_url), ("_REPLICA", self.database_replica_url)):
            if not (url or "").startswith("postgresql"):
                raise ValueError(
                    f"MEDVAULT_DATABASE{name}_URL must be PostgreSQL when a replica is set"
                )
        return self

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def effective_server_workers(self) -> int:
        return self.server_workers or os.cpu_count() or 1

    @property
    def clinical_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'clinical.db'}"

    @property
    def auth_db_url(self) -> str:
        return self.auth_database_url or f"sqlite:///{self.resolved_data_dir / 'auth.db'}"

    @property
    def patient_db_url(self) -> str:
        return self.patient_database_url or f"sqlite:///{self.resolved_data_dir / 'patients.db'}"

    @property
    def blob_storage_url(self) -> str:
        return self.storage_url or (self.resolved_data_dir / "blobs").as_uri()

    @property
    def keyring_path(self) -> Path:
        return self.keyring_file or self.resolved_data_dir / "keyring.json"

    @property
    def secret_key_path(self) -> Path:
        return self.resolved_data_dir / "secret.key"

    @property
    def jwt_key_path(self) -> Path:
        return self.resolved_data_dir / "jwt-signing.pem"

    @property
    def audit_key_path(self) -> Path:
        return self.resolved_data_dir / "audit-signing.pem"

    @property
    def witness_dir(self) -> Path:
        return self.audit_witness_dir or self.resolved_data_dir / "witness"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def check_production(self) -> None:
        """Refuse to run production on secrets that were generated locally or copied."""
        if not self.is_production:
            return
        problems = []
        if not self.keyring and not (self.keyring_file and self.keyring_file.exists()):
            problems.append("set MEDVAULT_KEYRING or MEDVAULT_KEYRING_FILE to a managed keyring")
        if self.secret_key is None or self.secret_key.strip().lower() in PLACEHOLDER_SECRETS:
            problems.append("set MEDVAULT_SECRET_KEY to a random value of at least 32 bytes")
        elif len(self.secret_key.encode()) < 32:
            problems.append("MEDVAULT_SECRET_KEY must be at least 32 bytes long")
        if self.jwt_private_key is None:
            problems.append("set MEDVAULT_JWT_PRIVATE_KEY to an Ed25519 private key (PEM)")
        if self.audit_signing_key is None:
            problems.append("set MEDVAULT_AUDIT_SIGNING_KEY to an Ed25519 private key (PEM)")
        if None in (self.database_url, self.auth_database_url, self.patient_database_url):
            problems.append(
                "set MEDVAULT_DATABASE_URL, MEDVAULT_AUTH_DATABASE_URL and "
                "MEDVAULT_PATIENT_DATABASE_URL"
            )
        if problems:
            raise ConfigurationError("production settings refused: " + "; ".join(problems))


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]  # overrides are validated by pydantic
