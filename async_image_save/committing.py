"""Putting an upload into its field: write the file, then commit it, exactly once.

:func:`write_file` writes the bytes through the field's storage under a fresh
name (never over an existing file); :func:`commit` then, in one short
transaction, flips the job to ``saved`` and points the model's field at that
name, provided this worker still holds the job's lease and no newer upload to
the field won. A worker whose commit does not happen removes its file with
:func:`remove_quietly`. Deciding what the job's outcome means (failing it,
signals) is left to ``processing.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import SuspiciousFileOperation
from django.db import DatabaseError, models, router, transaction

from async_image_save import status
from async_image_save.cleanup import delete_thumbnails_on_commit
from async_image_save.models import ImageJob
from async_image_save.payload import UploadPayload
from async_image_save.worker_errors import StorageFailure

logger = logging.getLogger("async_image_save")
State = ImageJob.State

#: What :func:`commit` returns when another worker took over the job and committed.
LOST = "lost"


def write_file(job: ImageJob, instance: models.Model, field: Any, payload: UploadPayload) -> str:
    """Write the file through the field's storage under a fresh name; return it.

    Picks the final name first, so a write that fails half-way can be removed:
    no partial file survives a failed attempt.
    """
    storage = field.storage
    name = None
    upload = payload.to_upload()
    try:
        if job.partial_name:
            # An earlier attempt died while writing (SIGKILL, OOM): drop what it left.
            remove_quietly(storage, job.partial_name)
        name = _available_name(job, instance, field, payload.name)
        # Recorded before writing, so a worker killed mid-write leaves a name to clean.
        status.note_partial(job.pk, name)
        return storage.save(name, upload, max_length=field.max_length)
    except Exception as exc:
        if name is not None:
            remove_quietly(storage, name)
        raise StorageFailure(str(job.pk), exc) from exc
    finally:
        upload.close()


def _available_name(job: ImageJob, instance: models.Model, field: Any, wanted: str) -> str:
    """The storage name for ``wanted``, or a plain fallback the storage accepts.

    Names like "😀" or an extension longer than the field allows make Django
    raise SuspiciousFileOperation; that is no reason to lose the upload.
    """
    storage = field.storage
    try:
        return storage.get_available_name(
            field.generate_filename(instance, wanted), max_length=field.max_length
        )
    except SuspiciousFileOperation:
        _stem, dot, ext = wanted.rpartition(".")
        fallback = f"upload-{job.pk.hex[:12]}" + (
            f".{ext}" if dot and ext.isalnum() and len(ext) <= 5 else ""
        )
        return storage.get_available_name(
            field.generate_filename(instance, fallback), max_length=field.max_length
        )


def commit(job: ImageJob, token: str, instance: models.Model, field: Any, name: str) -> str:
    """Flip the job to ``saved`` and set the field, atomically, if this worker still may.

    Returns ``saved``; :data:`LOST` when another worker committed first (its
    lease expired under this one); ``object_missing`` when the object was
    deleted meanwhile; or ``superseded`` when a newer upload to the field was
    saved first. In all but ``saved`` the file is the caller's to delete, and
    the job is left as it was: failing it is the caller's decision.
    """
    model = type(instance)
    update_fields = [field.name] + [
        extra
        for extra in (getattr(field, "width_field", None), getattr(field, "height_field", None))
        if extra
    ]
    try:
        with transaction.atomic(using=router.db_for_write(model)):
            # Locking the target row orders the commits of uploads to the same field.
            if not model._default_manager.select_for_update().filter(pk=instance.pk).exists():
                return "object_missing"
            if _newer_upload_won(job):
                return "superseded"
            if not status.mark_saved(job.pk, name, token=token):
                return LOST
            previous = model._default_manager.filter(pk=instance.pk).values_list(
                field.attname, flat=True
            )[0]
            if previous and previous != name:
                delete_thumbnails_on_commit(field.storage, previous)
            setattr(instance, field.attname, name)
            # update_fields: other fields edited since the request are not overwritten.
            instance.save(update_fields=update_fields)
            return State.SAVED
    except DatabaseError as exc:
        raise StorageFailure(str(job.pk), exc) from exc


def _newer_upload_won(job: ImageJob) -> bool:
    return (
        ImageJob.objects.filter(
            content_type_id=job.content_type_id,
            object_id=job.object_id,
            field_name=job.field_name,
            created_at__gt=job.created_at,
            state__in=(State.SAVED, State.DONE),
        )
        .exclude(pk=job.pk)
        .exists()
    )


def remove_quietly(storage: Any, name: str) -> None:
    """Delete ``name`` from ``storage`` if it is there (logged, never raised)."""
    try:
        if storage.exists(name):
            storage.delete(name)
    except Exception:
        logger.exception("async_image_save could not remove partial file %s", name)
