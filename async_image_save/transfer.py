"""The Celery task that copies a ``QueuedStorage`` file to its remote storage.

The message carries two strings: the storage's identity and the file name.
The identity is ``"storages:<alias>"`` for a storage configured in
``STORAGES`` or ``"field:<app_label.Model.field>"`` for a model field's
storage. A worker on another machine resolves either from its own settings and
models, which deploy with the code; a dotted path to an instance would need
a module-level instance, and pickling the storage would send its credentials
through the broker. The core of the work is :meth:`QueuedStorage.transfer
<async_image_save.storage.QueuedStorage.transfer>`; this module only adds
Celery: retries with backoff, and the failure once they are used up.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from async_image_save.conf import conf

logger = logging.getLogger("async_image_save")

MESSAGE_SERIALIZER = "msgpack"


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
    """Copy ``name`` of the QueuedStorage ``storage`` (its identity) to the remote storage."""
    from async_image_save.storage import TransferError, fail_unresolved, resolve_storage

    try:
        queued = resolve_storage(storage)
    except ImproperlyConfigured as exc:
        fail_unresolved(storage, name, str(exc))  # not retried: a retry would not find it either
        return "failed"
    try:
        return queued.transfer(name)
    except (TransferError, DatabaseError) as exc:
        retries = self.request.retries
        if retries >= conf.ASYNC_IMAGE_SAVE_MAX_RETRIES:
            code = exc.code if isinstance(exc, TransferError) else "database_error"
            queued.fail_transfer(name, code, f"Gave up after {retries} retries: {exc}")
            return "failed"
        delay = min(
            conf.ASYNC_IMAGE_SAVE_RETRY_BACKOFF * (2**retries),
            conf.ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX,
        )
        raise self.retry(exc=exc, countdown=delay) from exc


def enqueue(storage: str, name: str, *, queue: str | None = None, countdown: float = 0) -> None:
    """Send the transfer task (msgpack, whatever ``CELERY_TASK_SERIALIZER`` says)."""
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
