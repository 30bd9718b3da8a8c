"""What a worker does with a job, independent of Celery.

``tasks.py`` wraps these functions in Celery tasks and turns
:class:`StorageFailure` into retries; everything else ends the job here.
Every step re-reads the job row first, so redelivered or duplicated messages
find the job already finished and do nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import (
    FieldDoesNotExist,
    ImproperlyConfigured,
    SuspiciousFileOperation,
    ValidationError,
)
from django.db import DatabaseError, models, router, transaction

from async_image_save import status
from async_image_save.cleanup import delete_thumbnails_on_commit
from async_image_save.conf import conf
from async_image_save.exceptions import (
    ChecksumMismatch,
    ImageRejected,
    PayloadDecodeError,
    PayloadMissing,
)
from async_image_save.generation import field_specs, generate_thumbnails
from async_image_save.imaging import validate_image
from async_image_save.models import ImageJob
from async_image_save.payload import UploadPayload, decode
from async_image_save.signals import image_saved, send_robust, thumbnails_ready
from async_image_save.staging import resolve_ref

logger = logging.getLogger("async_image_save")
State = ImageJob.State


class StorageFailure(Exception):
    """The storage (or database) failed in a way worth retrying."""

    def __init__(self, job_id: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.job_id, self.cause = job_id, cause


def _load_job(job_id: str) -> ImageJob | None:
    try:
        job = ImageJob.objects.select_related("content_type").filter(pk=job_id).first()
    except (ValidationError, ValueError):  # not a UUID: a forged or corrupted message
        logger.warning("async_image_save: %r is not a job id; message dropped", job_id)
        return None
    if job is None:
        logger.warning("async_image_save job %s no longer exists; message dropped", job_id)
    return job


def _load_instance(job: ImageJob) -> models.Model | None:
    model = job.content_type.model_class()
    if model is None:
        return None
    return model._default_manager.filter(pk=job.object_id).first()


def _read_frame(body: bytes | str) -> bytes | memoryview:
    if isinstance(body, str):
        stager, key = resolve_ref(body)
        return stager.get(key)
    if isinstance(body, (bytes, bytearray, memoryview)):
        return body
    raise PayloadDecodeError(f"Message body is a {type(body).__name__}, not bytes or a reference.")


def discard_staged(job: ImageJob) -> None:
    """Remove the job's staged payload, if any (logged, never raised)."""
    if not job.staged_ref:
        return
    try:
        stager, key = resolve_ref(job.staged_ref)
        stager.delete(key)
    except Exception:
        logger.exception("async_image_save could not remove staged payload %s", job.staged_ref)


#: Failures an admin can retry: the staged payload is kept (until its TTL) for them.
RETRYABLE_CODES = frozenset({"storage_error", "thumbnail_error", "broker_unreachable"})


def _fail(job: ImageJob, code: str, error: str) -> str:
    status.mark_failed(job.pk, code, error)
    if code not in RETRYABLE_CODES:
        discard_staged(job)
    return State.FAILED


def _unpack(job: ImageJob, body: bytes | str) -> UploadPayload:
    """Fetch (if staged), decode, verify and validate the payload of ``job``.

    An unreachable staging store is a :class:`StorageFailure` (retried); every
    other problem raises the library error that names it.
    """
    try:
        frame = _read_frame(body)
    except (PayloadMissing, PayloadDecodeError, ImproperlyConfigured):
        raise
    except Exception as exc:  # redis-py connection errors and the like
        raise StorageFailure(str(job.pk), exc) from exc
    payload = decode(frame)
    payload.verify(job.sha256)
    validate_image(payload.data)
    return payload


def _matches_message(job: ImageJob, model: str, pk: str, field: str) -> bool:
    model_cls = job.content_type.model_class()
    return (
        model_cls is not None
        and model_cls._meta.label_lower == str(model).lower()
        and job.object_id == str(pk)
        and job.field_name == field
    )


#: What :func:`_commit` returns when another worker took over the job and committed.
LOST = "lost"


class JobBusy(Exception):
    """Another worker holds the job's lease (a duplicate or early redelivery)."""

    def __init__(self, job_id: str, retry_in: float) -> None:
        super().__init__(f"job {job_id} is being processed by another worker")
        self.job_id, self.retry_in = job_id, retry_in


def save_upload(job_id: str, body: bytes | str, *, model: str, pk: str, field: str) -> str:
    """Decode, verify and store the upload of ``job_id``; return the job's new state.

    See :func:`_run_claimed` for how the effect stays exactly-once.
    """
    return _run_claimed(
        job_id, model, pk, field, lambda job, token: _save_claimed(job, token, body)
    )


def bind_stored(job_id: str, name: str, *, model: str, pk: str, field: str) -> str:
    """Validate ``name`` in the field's storage and bind it (``process_stored``)."""
    return _run_claimed(
        job_id, model, pk, field, lambda job, token: _bind_claimed(job, token, name)
    )


def _run_claimed(
    job_id: str, model: str, pk: str, field: str, work: Callable[[ImageJob, str], str]
) -> str:
    """Load and check the job, claim its lease, run ``work``; return the job's state.

    Exactly-once effect without locks held across I/O: the worker first claims
    a lease on the job row (compare-and-set), writes the file under a fresh
    name, then commits in one short transaction that locks the target row,
    re-checks the claim and that no newer upload already won, flips the job to
    ``saved`` and updates only the file field. A loser deletes its own file.
    Raises :class:`StorageFailure` for errors worth retrying and
    :class:`JobBusy` while another worker holds the lease.
    """
    job = _load_job(job_id)
    if job is None:
        return "missing"
    if job.state != State.PENDING:
        logger.info("async_image_save job %s is already %s; nothing to do", job_id, job.state)
        return job.state
    if not _matches_message(job, model, pk, field):
        return _fail(
            job,
            "target_mismatch",
            f"The message names {model}:{pk}.{field}, but the job targets another object; "
            "the message was forged or corrupted.",
        )
    claim = status.claim(job.pk)
    if claim.token is None:
        if claim.state != State.PENDING:
            return claim.state
        raise JobBusy(job_id, claim.retry_in)
    if claim.attempts > conf.ASYNC_IMAGE_SAVE_MAX_ATTEMPTS:
        return _fail(
            job,
            "too_many_attempts",
            f"Started {claim.attempts - 1} times without finishing (the worker may crash on "
            "this upload); given up after ASYNC_IMAGE_SAVE_MAX_ATTEMPTS.",
        )
    try:
        return work(job, claim.token)
    except (StorageFailure, JobBusy):
        _release_quietly(job.pk, claim.token)
        raise
    except DatabaseError as exc:
        # The database went away mid-job: retry later (the lease expires by itself
        # if it cannot be given back now).
        _release_quietly(job.pk, claim.token)
        raise StorageFailure(str(job.pk), exc) from exc
    except Exception as exc:
        # A bug or an input nobody foresaw: end the job with the reason instead of
        # leaving it pending forever (the message is acknowledged either way).
        logger.exception("async_image_save job %s crashed", job_id)
        return _fail(job, "internal_error", f"{type(exc).__name__}: {exc}")
    except BaseException:
        _release_quietly(job.pk, claim.token)
        raise


def _release_quietly(job_id: Any, token: str) -> None:
    try:
        status.release(job_id, token)
    except DatabaseError:
        logger.warning("async_image_save could not release job %s; its lease will expire", job_id)


def _save_claimed(job: ImageJob, token: str, body: bytes | str) -> str:
    if job.stored_name:
        return _fail(
            job, "target_mismatch", "An upload message names a process_stored() job; forged?"
        )
    try:
        payload = _unpack(job, body)
    except ImproperlyConfigured as exc:
        return _fail(job, "staging_misconfigured", str(exc))
    except PayloadMissing as exc:
        return _fail(job, "payload_missing", str(exc))
    except PayloadDecodeError as exc:
        return _fail(job, exc.code, str(exc))
    except ChecksumMismatch as exc:
        return _fail(job, "checksum_mismatch", str(exc))
    except ImageRejected as exc:
        return _fail(job, exc.code, str(exc))
    instance = _load_instance(job)
    if instance is None:
        return _fail(
            job,
            "object_missing",
            f"{job.model_label} {job.object_id} no longer exists; nothing was written.",
        )
    field = instance._meta.get_field(job.field_name)
    name = _write_file(job, instance, field, payload)
    outcome = _commit(job, token, instance, field, name)
    if outcome != State.SAVED:
        _remove_quietly(field.storage, name)
        return status.current_state(job.pk) if outcome == LOST else outcome
    return _after_saved(job, instance, name)


def _after_saved(job: ImageJob, instance: models.Model, name: str) -> str:
    """Signal, clean the staging, and finish the job when no thumbnails are due."""
    job.refresh_from_db()
    send_robust(
        image_saved,
        sender=type(instance),
        job=job,
        instance=instance,
        field_name=job.field_name,
        name=name,
    )
    discard_staged(job)
    if not job.thumbnails or not field_specs(instance, job.field_name):
        status.mark_done(job.pk)
        return State.DONE
    return State.SAVED


def _bind_claimed(job: ImageJob, token: str, name: str) -> str:
    from async_image_save.saving import check_stored_name

    if not job.stored_name or name != job.stored_name:
        return _fail(
            job,
            "target_mismatch",
            "The bind message names another file than its job (or the job is an upload); "
            "the message was forged or corrupted.",
        )
    try:
        check_stored_name(name)
    except (TypeError, ValueError) as exc:
        return _fail(job, "bad_name", str(exc))
    instance = _load_instance(job)
    if instance is None:
        return _fail(job, "object_missing", f"{job.model_label} {job.object_id} no longer exists.")
    field = instance._meta.get_field(job.field_name)
    storage = field.storage
    limit = conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES
    try:
        if not storage.exists(name):
            return _fail(job, "stored_missing", f"{name!r} is not in the field's storage.")
        size = storage.size(name)
        if size > limit:
            return _fail(job, "too_large", f"{name!r} is {size} bytes, over the {limit} limit.")
        with storage.open(name, "rb") as fh:
            data = fh.read(limit + 1)
    except Exception as exc:
        raise StorageFailure(str(job.pk), exc) from exc
    if len(data) > limit:
        return _fail(job, "too_large", f"{name!r} is over the {limit} byte limit.")
    try:
        validate_image(data)
    except ImageRejected as exc:
        return _fail(job, exc.code, str(exc))
    ImageJob.objects.filter(pk=job.pk).update(
        size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    outcome = _commit(job, token, instance, field, name)
    if outcome != State.SAVED:
        # The object stays where the browser put it.
        return status.current_state(job.pk) if outcome == LOST else outcome
    return _after_saved(job, instance, name)


def _write_file(job: ImageJob, instance: models.Model, field: Any, payload: UploadPayload) -> str:
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
            _remove_quietly(storage, job.partial_name)
        name = _available_name(job, instance, field, payload.name)
        # Recorded before writing, so a worker killed mid-write leaves a name to clean.
        status.note_partial(job.pk, name)
        return storage.save(name, upload, max_length=field.max_length)
    except Exception as exc:
        if name is not None:
            _remove_quietly(storage, name)
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


def _commit(job: ImageJob, token: str, instance: models.Model, field: Any, name: str) -> str:
    """Flip the job to ``saved`` and set the field, atomically, if this worker still may.

    Returns ``saved``, or :data:`LOST` when another worker committed first (its
    lease expired under this one), or ``failed``; in both of the latter the file
    is the caller's to delete.
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
                outcome = "object_missing"
            elif _newer_upload_won(job):
                outcome = "superseded"
            elif not status.mark_saved(job.pk, name, token=token):
                return LOST
            else:
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
    if outcome == "object_missing":
        _fail(
            job,
            outcome,
            f"{job.model_label} {job.object_id} was deleted while saving; file removed.",
        )
    else:
        _fail(
            job, outcome, "A newer upload to the same field was saved first; this one was dropped."
        )
    return State.FAILED


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


def _remove_quietly(storage: Any, name: str) -> None:
    try:
        if storage.exists(name):
            storage.delete(name)
    except Exception:
        logger.exception("async_image_save could not remove partial file %s", name)


def make_thumbnails(job_id: str) -> str:
    """Generate the thumbnails of a saved job, then mark it ``done``."""
    job = _load_job(job_id)
    if job is None:
        return "missing"
    if job.state != State.SAVED:
        return job.state
    claim = status.claim(job.pk, state=State.SAVED, count=False)
    if claim.token is None:
        if claim.state != State.SAVED:
            return claim.state
        raise JobBusy(job_id, claim.retry_in)  # a duplicate while the first still works
    instance = _load_instance(job)
    if instance is None:
        return _fail(
            job, "object_missing", "The object was deleted before its thumbnails were made."
        )
    try:
        records = generate_thumbnails(instance, job.field_name, job.content_type)
    except ImageRejected as exc:
        return _fail(job, exc.code, str(exc))
    except Exception as exc:
        _release_quietly(job.pk, claim.token)
        raise StorageFailure(job_id, exc) from exc
    if status.mark_done(job.pk):
        job.refresh_from_db()
        send_robust(thumbnails_ready, sender=type(instance), job=job, thumbnails=records)
    return State.DONE


def fail_after_retries(job_id: str, code: str, error: BaseException) -> None:
    """End a job whose retries are exhausted, cleaning its staged payload."""
    job = _load_job(job_id)
    if job is not None:
        _fail(job, code, f"{type(error).__name__}: {error}")


def regenerate(model: str, pk: str, field: str, only: list[str] | None = None) -> int:
    """Regenerate the thumbnails of one object's field; return how many were made."""
    from django.apps import apps

    try:
        model_cls = apps.get_model(model)
    except (LookupError, ValueError):
        logger.warning("async_image_save: unknown model %r in a regenerate message", model)
        return 0
    try:
        is_file_field = isinstance(model_cls._meta.get_field(field), models.FileField)
    except FieldDoesNotExist:
        is_file_field = False
    if not is_file_field:
        logger.warning("async_image_save: %s.%s is not a file field; message dropped", model, field)
        return 0
    instance = model_cls._default_manager.filter(pk=pk).first()
    if instance is None:
        return 0
    try:
        return len(generate_thumbnails(instance, field, only=only))
    except ImageRejected:
        logger.warning("async_image_save: %s %s.%s is not a usable image", model, pk, field)
        return 0
    except Exception as exc:
        raise StorageFailure(f"{model}:{pk}", exc) from exc
