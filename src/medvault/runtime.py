"""Everything a running vault holds: settings, databases, blob store and keys.

Built once per process (by ``create_app`` or a CLI command) and passed explicitly,
so services never reach for globals.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field

from medvault.auth.principal_cache import PrincipalCaches
from medvault.config import Settings
from medvault.crypto.errors import UnknownKekError
from medvault.crypto.keyring import Keyring, WrappedDek, load_keyring
from medvault.crypto.secret_key import load_secret_key
from medvault.crypto.signing_keys import SigningKey, load_signing_key
from medvault.db import migrate
from medvault.db.base import PatientBase
from medvault.db.engine import Database
from medvault.db.replica import ClinicalReplica
from medvault.governance.schedule import NHS_PRESET, Schedule
from medvault.governance.schedule import load as load_schedule
from medvault.kit.private_files import exposure_warning, make_private_dirs
from medvault.storage.azure_access import AzureAccess
from medvault.storage.base import BlobStore
from medvault.storage.factory import open_blob_store

logger = logging.getLogger(__name__)


def open_configured_store(settings: Settings, url: str | None = None) -> BlobStore:
    """The blob store at ``url`` (default: the vault's own), with the settings' endpoint,
    region, part size and Azure credentials: ``storage migrate`` opens its target with
    the same settings as the vault's store."""
    return open_blob_store(
        url or settings.blob_storage_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_part_size=settings.s3_part_size,
        azure_access=AzureAccess(
            connection_string=settings.azure_connection_string,
            account_url=settings.azure_account_url,
            account_key=settings.azure_account_key,
            sas_token=settings.azure_sas_token,
        ),
        azure_block_size=settings.azure_block_size,
    )


@dataclass
class Runtime:
    settings: Settings
    clinical: Database
    auth: Database
    # Demographics; the clinical sessions read Patient through it (db.engine.read_through).
    patients: Database
    blobs: BlobStore
    keyring: Keyring
    secret_key: bytes
    jwt_key: SigningKey
    audit_key: SigningKey
    # Resolved credentials, reused while the auth epoch stands (auth.principal_cache).
    principals: PrincipalCaches
    # Retention classes and type mappings (governance.schedule), validated at start.
    retention: Schedule = NHS_PRESET
    # The clinical database's read replica, when MEDVAULT_DATABASE_REPLICA_URL is set.
    clinical_replica: ClinicalReplica | None = None
    _keyring_lock: threading.Lock = field(default_factory=threading.Lock)
    _keyring_mtime: int | None = None

    def _keyring_file_mtime(self) -> int | None:
        if self.settings.keyring:
            return None  # from the environment: it only changes with a restart
        try:
            return self.settings.keyring_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def reload_keyring(self) -> Keyring:
        with self._keyring_lock:
            self._keyring_mtime = self._keyring_file_mtime()
            self.keyring = load_keyring(
                env_value=self.settings.keyring, path=self.settings.keyring_path, create=False
            )
            return self.keyring

    def current_keyring(self) -> Keyring:
        """The keyring for new wraps, re-read if `keys rotate` changed its file meanwhile.

        Without this, instances that were running during a rotation would go on
        wrapping new uploads under the old KEK until restarted.
        """
        mtime = self._keyring_file_mtime()
        if mtime is not None and mtime != self._keyring_mtime:
            return self.reload_keyring()
        return self.keyring

    def unwrap_dek(self, wrapped: WrappedDek, *, version_id: uuid.UUID) -> bytes:
        try:
            return self.keyring.unwrap_dek(wrapped, version_id=version_id)
        except UnknownKekError:
            # Another instance may have rotated keys since this process loaded them.
            return self.reload_keyring().unwrap_dek(wrapped, version_id=version_id)

    def migrate(self) -> None:
        migrate.upgrade_all(auth=self.auth, patients=self.patients, clinical=self.clinical)

    def close(self) -> None:
        if self.clinical_replica is not None:
            self.clinical_replica.dispose()
        self.clinical.dispose()
        self.auth.dispose()
        self.patients.dispose()
        self.principals.close()


def build_runtime(settings: Settings, *, run_migrations: bool = False) -> Runtime:
    settings.check_production()
    generate = not settings.is_production
    if generate:
        make_private_dirs(settings.resolved_data_dir)
    exposure = exposure_warning(settings.resolved_data_dir)
    if exposure:
        logger.warning(exposure)
    pool_size = settings.database_pool_size
    auth = Database(settings.auth_db_url, pool_size=pool_size)
    patients = Database(settings.patient_db_url, pool_size=pool_size)
    clinical = Database(settings.clinical_database_url, pool_size=pool_size)
    clinical.read_through(PatientBase, patients)
    runtime = Runtime(
        settings=settings,
        clinical=clinical,
        auth=auth,
        patients=patients,
        principals=PrincipalCaches.create(
            url=auth.url, ttl_seconds=settings.principal_cache_seconds
        ),
        blobs=open_configured_store(settings),
        keyring=load_keyring(
            env_value=settings.keyring, path=settings.keyring_path, create=generate
        ),
        secret_key=load_secret_key(
            env_value=settings.secret_key, path=settings.secret_key_path, create=generate
        ),
        jwt_key=load_signing_key(
            env_value=settings.jwt_private_key,
            path=settings.jwt_key_path,
            create=generate,
            purpose="JWT signing",
        ),
        audit_key=load_signing_key(
            env_value=settings.audit_signing_key,
            path=settings.audit_key_path,
            create=generate,
            purpose="audit checkpoint signing",
        ),
        retention=load_schedule(settings.retention_file),
    )
    runtime._keyring_mtime = runtime._keyring_file_mtime()
    if settings.database_replica_url:
        runtime.clinical_replica = ClinicalReplica(
            runtime.clinical,
            settings.database_replica_url,
            max_lag_seconds=settings.replica_max_lag_seconds,
            retry_seconds=settings.replica_retry_seconds,
            pool_size=pool_size,
        )
    if run_migrations:
        runtime.migrate()
    return runtime
