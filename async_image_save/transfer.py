"""Copying a ``QueuedStorage`` file to its remote storage: the Celery task and its work.

The task message carries two strings: the storage's identity and the file
name. The identity is ``"storages:<alias>"`` for a storage configured in
``STORAGES`` or ``"field:<app_label.Model.field>"`` for a model field's
storage, and a worker on another machine resolves either from its own
settings and models, which deploy with the code. (A dotted path would need a
module-level instance; a pickled storage would carry its credentials through
the broker.)

The copy is idempotent. Its state row moves ``local`` -> ``transferring`` ->
``remote`` by compare-and-set UPDATEs, and the last step is taken only after
the remote copy has been checked: its size, and its MD5 where the backend
gives one (the ETag of a single-part S3 upload). A redelivered message that
finds ``remote`` does nothing, not even a call to either storage.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import Storage
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from async_image_save.conf import conf
from async_image_save.exceptions import AsyncImageSaveError
from async_image_save.models import QueuedFile

if TYPE_CHECKING:  # pragma: no cover
    from async_image_save.storage import QueuedStorage

logger = logging.getLogger("async_image_save")

MESSAGE_SERIALIZER = "msgpack"
State = QueuedFile.State
_CHUNK = 1024 * 1024
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


class TransferError(AsyncImageSaveError, OSError):
    """Copying a file to the remote storage failed.

    ``retryable`` errors (the remote is unreachable, the copy did not verify)
    are retried with backoff; the others end the transfer ``failed`` at once.
    ``code`` is what the state row records.
    """

    def __init__(
        self, message: str, *, storage: str, name: str, code: str, retryable: bool
    ) -> None:
        super().__init__(message)
        self.storage, self.name, self.code, self.retryable = storage, name, code, retryable


@dataclass(frozen=True)
class Fingerprint:
    """What a storage says about a stored copy; a ``None`` field is unknown."""

    size: int | None
    md5: str | None


def copy_to_remote(storage: QueuedStorage, name: str) -> str:
    """Copy ``name`` to ``storage.remote``, check the copy, then flip its row to ``remote``.

    Returns the row's state afterwards (``"missing"`` when there is no row).
    A row that is already ``remote`` (a redelivered message) or ``failed``
    returns at once without calling either storage. A local copy that is gone
    ends the row ``failed`` (``local_missing``) with nothing flipped. Raises
    :class:`TransferError` when the copy should be retried.
    """
    rows = storage.rows(name)
    row = rows.values("state", "attempts").first()
    if row is None:
        logger.info("async_image_save: %s was deleted before its transfer", name)
        return "missing"
    if row["state"] not in (State.LOCAL, State.TRANSFERRING):
        return str(row["state"])
    # TRANSFERRING can be claimed too: the message is redelivered only when the
    # worker that had it died (acks_late + reject_on_worker_lost).
    claimed = rows.filter(state__in=(State.LOCAL, State.TRANSFERRING)).update(
        state=State.TRANSFERRING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        return storage.state_of_row(name) or "missing"
    try:
        local = local_fingerprint(storage.local, name)
        _upload(storage, name, local, earlier_attempt=row["attempts"] > 0)
    except Exception as exc:
        # Another delivery may have finished (and deleted the local copy), or
        # the file may have been deleted while we copied: neither is a failure.
        settled = _settled(storage, name)
        if settled is not None:
            return settled
        if isinstance(exc, FileNotFoundError):
            storage.fail_transfer(
                name,
                "local_missing",
                f"The local copy of {name!r} is missing from {describe(storage.local)} ({exc}): "
                "it was removed before the transfer. Nothing was uploaded; save the file again.",
            )
            return State.FAILED
        error = exc if isinstance(exc, TransferError) else _remote_error(storage, name, exc)
        if not error.retryable:
            storage.fail_transfer(name, error.code, str(error))
            return State.FAILED
        _record_error(storage, name, error.code, str(error))
        if error is exc:
            raise
        raise error from exc
    now = timezone.now()
    flipped = rows.filter(state=State.TRANSFERRING).update(
        state=State.REMOTE,
        size=local.size,
        md5=local.md5 or "",
        error="",
        error_code="",
        transferred_at=now,
        updated_at=now,
    )
    if not flipped:
        return _settled(storage, name) or str(storage.state_of_row(name))
    storage.remember(name, State.REMOTE)
    if storage.delete_local:
        try:
            storage.local.delete(name)
        except Exception:
            logger.exception("async_image_save could not delete the local copy of %s", name)
    return State.REMOTE


def _remote_error(storage: QueuedStorage, name: str, exc: BaseException) -> TransferError:
    """Whatever the remote's client raised, as a retryable :class:`TransferError`."""
    return TransferError(
        f"Copying {name!r} to {describe(storage.remote)} failed: {type(exc).__name__}: {exc}",
        storage=storage.identity,
        name=name,
        code="remote_error",
        retryable=True,
    )


def describe(storage: Storage) -> str:
    """``S3Storage(bucket)``, ``FileSystemStorage(/path)``: for messages, not ``<object at>``."""
    where = getattr(storage, "bucket_name", None) or getattr(storage, "location", None)
    return f"{type(storage).__name__}({where})" if where else type(storage).__name__


def _settled(storage: QueuedStorage, name: str) -> str | None:
    """``"remote"`` or ``"missing"`` if the row says the copy is over, else ``None``.

    A row deleted while the copy ran: what was uploaded is removed, so that no
    orphan stays on the remote.
    """
    state = storage.state_of_row(name)
    if state is None:
        _remove_quietly(storage.remote, name)
        return "missing"
    return State.REMOTE if state == State.REMOTE else None


def _upload(
    storage: QueuedStorage, name: str, local: Fingerprint, *, earlier_attempt: bool
) -> None:
    remote = storage.remote
    if earlier_attempt:
        # An earlier attempt may have finished the copy before its worker died.
        found = remote_fingerprint(remote, name)
        if found is not None and found.md5 is not None and found == local:
            return
        if found is not None:
            remote.delete(name)
    with storage.local.open(name, "rb") as fh:
        stored = remote.save(name, File(fh, name=name))
    if stored != name:
        _remove_quietly(remote, stored)
        raise TransferError(
            f"{describe(remote)} saved {name!r} as {stored!r}: it renames instead of overwriting. "
            "Configure it to overwrite (S3Storage: file_overwrite=True, the default).",
            storage=storage.identity,
            name=name,
            code="remote_renamed",
            retryable=False,
        )
    found = remote_fingerprint(remote, name)
    problem = None
    if found is None:
        problem = "is missing right after the upload"
    elif found.size is not None and found.size != local.size:
        problem = f"has {found.size} bytes, the local copy {local.size}"
    elif found.md5 is not None and found.md5 != local.md5:
        problem = f"has MD5 {found.md5}, the local copy {local.md5}"
    if problem:
        _remove_quietly(remote, name)
        raise TransferError(
            f"The remote copy of {name!r} {problem}; it was removed and is sent again.",
            storage=storage.identity,
            name=name,
            code="verify_failed",
            retryable=True,
        )


def _record_error(storage: QueuedStorage, name: str, code: str, error: str) -> None:
    from async_image_save.transfer_state import cut

    storage.rows(name).filter(state=State.TRANSFERRING).update(
        error_code=code, error=cut(error), updated_at=timezone.now()
    )


def _remove_quietly(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:
        logger.exception("async_image_save could not remove remote copy %s", name)


def local_fingerprint(storage: Storage, name: str) -> Fingerprint:
    """Size and MD5 of ``name`` on ``storage``, read in 1 MiB chunks."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with storage.open(name, "rb") as fh:
        for chunk in iter(partial(fh.read, _CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return Fingerprint(size, digest.hexdigest())


def remote_fingerprint(storage: Storage, name: str) -> Fingerprint | None:
    """Size (and MD5 where known) of ``name`` on ``storage``; ``None`` if it is not there.

    S3 answers both with one HEAD. Other storages give the size only.
    """
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # django-storages[s3] is not installed
        pass
    else:
        if isinstance(storage, S3Storage):
            return _s3_fingerprint(storage, name)
    if not storage.exists(name):
        return None
    return Fingerprint(storage.size(name), None)


def _s3_fingerprint(storage: Any, name: str) -> Fingerprint | None:
    from botocore.exceptions import ClientError
    from storages.utils import clean_name

    key = storage._normalize_name(clean_name(name))
    try:
        head = storage.connection.meta.client.head_object(Bucket=storage.bucket_name, Key=key)
    except ClientError as err:
        if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise
    if head.get("ContentEncoding") == "gzip":  # S3Storage(gzip=True) compressed it
        return Fingerprint(None, None)
    # The ETag is the MD5 of the bytes only for a single-part upload without
    # SSE-KMS or SSE-C; a multipart ETag is "<md5 of md5s>-<parts>".
    etag = str(head.get("ETag", "")).strip('"')
    plain = (
        _MD5_ETAG.fullmatch(etag) is not None
        and head.get("ServerSideEncryption") != "aws:kms"
        and "SSECustomerAlgorithm" not in head
    )
    return Fingerprint(int(head["ContentLength"]), etag if plain else None)


@shared_task(
    name="async_image_save.transfer_file",
    acks_late=True,
    reject_on_worker_lost=True,
    serializer=MESSAGE_SERIALIZER,
    ignore_result=True,
    bind=True,
    max_retries=None,  # bounded by ASYNC_IMAGE_SAVE_MAX_RETRIES, read when retrying
)
def transfer_file(self: Any, storage: str, name: str) -> str:
    """Copy ``name`` of the QueuedStorage whose identity is ``storage`` to its remote."""
    from async_image_save.storage_registry import fail_unresolved, resolve_storage

    try:
        queued = resolve_storage(storage)
    except ImproperlyConfigured as exc:
        fail_unresolved(storage, name, str(exc))  # a retry would not find it either
        return State.FAILED
    try:
        return copy_to_remote(queued, name)
    except (TransferError, DatabaseError) as exc:
        retries = self.request.retries
        if retries >= conf.ASYNC_IMAGE_SAVE_MAX_RETRIES:
            code = exc.code if isinstance(exc, TransferError) else "database_error"
            queued.fail_transfer(name, code, f"Gave up after {retries} retries: {exc}")
            return State.FAILED
        delay = min(
            conf.ASYNC_IMAGE_SAVE_RETRY_BACKOFF * (2**retries),
            conf.ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX,
        )
        raise self.retry(exc=exc, countdown=delay) from exc


def enqueue(storage: str, name: str, *, queue: str | None = None, countdown: float = 0) -> None:
    """Send the transfer task, serialized with msgpack whatever ``CELERY_TASK_SERIALIZER`` says."""
    options: dict[str, Any] = {"serializer": MESSAGE_SERIALIZER}
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    transfer_file.apply_async(
        (storage, name),
        retry=True,
        retry_policy={
            "max_retries": conf.ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        **options,
    )
