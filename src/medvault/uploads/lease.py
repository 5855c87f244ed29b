"""The lease a request holds on an upload while it appends or completes it.

A row with an expiry, not a database lock: a request lasts as long as the client's
upload does, and a transaction (on SQLite, the writer lock) held that long would stall
every other write. The holder renews it while it works; a crashed holder's lease runs
out after ``MEDVAULT_UPLOAD_LOCK_SECONDS``, and the client's retry takes over. Whatever
the lease says, progress is only ever recorded by a compare-and-set on its token.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from anyio import to_thread

from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.runtime import Runtime
from medvault.uploads import repository
from medvault.uploads.models import Upload
from medvault.uploads.protocol import UploadLocked

logger = logging.getLogger(__name__)


class Lease:
    """The upload's lease for one request: taken, renewed while held, released."""

    def __init__(self, runtime: Runtime, upload_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.upload_id = upload_id
        self.token = uuid.uuid4()
        self.seconds = runtime.settings.upload_lock_seconds
        self._renewing: asyncio.Task[None] | None = None
        # The upload as it stood when the lease was taken (read in the same transaction).
        self.upload: Upload | None = None
        # Set when the request's last record released the lease in its own commit.
        self.released = False

    def _until(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def _take(self) -> bool:
        """Take the lease and read the upload as it stands, in one transaction."""
        now = utcnow()
        with self.runtime.clinical.session() as session:
            taken = repository.take_lease(
                session, self.upload_id, self.token, now=now, until=now + self._until()
            )
            upload = repository.get(session, self.upload_id) if taken else None
            if upload is not None:
                session.expunge(upload)
            session.commit()
        self.upload = upload
        return taken and upload is not None

    def release_values(self) -> dict[str, object]:
        """Columns that release the lease, for a commit that records the request's end."""
        return {"lock_token": None, "lock_expires_at": None}

    def _renew(self) -> None:
        with self.runtime.clinical.session() as session:
            repository.renew_lease(session, self.upload_id, self.token, utcnow() + self._until())
            session.commit()

    def _release(self) -> None:
        with self.runtime.clinical.session() as session:
            repository.release_lease(session, self.upload_id, self.token)
            session.commit()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await to_thread.run_sync(self._renew)
            except Exception:  # the commit's compare-and-set is what protects the data
                logger.warning("could not renew the lease of upload %s", self.upload_id)

    async def __aenter__(self) -> Lease:
        if not await to_thread.run_sync(self._take):
            raise UploadLocked(N_("Another request is appending to this upload; retry shortly."))
        self._renewing = asyncio.ensure_future(self._keep())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._renewing is not None
        self._renewing.cancel()
        if self.released:
            return
        try:
            await asyncio.shield(to_thread.run_sync(self._release))
        except Exception:  # it runs out by itself
            logger.warning("could not release the lease of upload %s", self.upload_id)
