"""What a worker does with a job, independent of Celery.

``tasks.py`` wraps these functions in Celery tasks and turns
:class:`StorageFailure` into retries; everything else ends the job here.
Every step re-reads the job row first, so redelivered or duplicated messages
find the job already finished and do nothing.

The steps are built from ``job_input.py`` (the job row, its object and its
payload), ``committing.py`` (writing the file and committing it to the field)
and ``worker_errors.py`` (:class:`StorageFailure` and :class:`JobBusy`,
re-exported here).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import DatabaseError, models

from async_image_save import committing, status
from async_image_save.committing import LOST
from async_image_save.conf import conf
from async_image_save.exceptions import (
    ChecksumMismatch,
    ImageRejected,
    PayloadDecodeError,
    PayloadMissing,
)
from async_image_save.generation import field_specs, generate_thumbnails
from async_image_save.imaging import validate_image
from async_image_save.job_input import (
    discard_staged,
    load_instance,
    load_job,
    matches_message,
    unpack,
)
from async_image_save.models import ImageJob
from async_image_save.signals import image_saved, send_robust, thumbnails_ready
from async_image_save.worker_errors import JobBusy, StorageFailure

logger = logging.getLogger("async_image_save")
State = ImageJob.State


#: Failures an admin can retry: the staged payload is kept (until its TTL) for them.
RETRYABLE_CODES = frozenset({"storage_error", "thumbnail_error", "broker_unreachable"})


def _fail(job: ImageJob, code: str, error: str) -> str:
    status.mark_failed(job.pk, code, error)
    if code not in RETRYABLE_CODES:
        discard_staged(job)
    return State.FAILED


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
    job = load_job(job_id)
    if job is None:
        return "missing"
    if job.state != State.PENDING:
        logger.info("async_image_save job %s is already %s; nothing to do", job_id, job.state)
        return job.state
    if not matches_message(job, model, pk, field):
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
        payload = unpack(job, body)
    except ImproperlyConfigured as exc:
        return _fail(job, "staging_misconfigured", str(exc))
    except PayloadMissing as exc:
        return _fail(job, "payload_missing", str(exc))
    except PayloadDecodeError as exc:
        return _fail(job, exc.code, str(exc))
    except ChecksumMismatch as exc:
        return _fail(job, exc.code, str(exc))
    except ImageRejected as exc:
        return _fail(job, exc.code, str(exc))
    instance = load_instance(job)
    if instance is None:
        return _fail(
            job,
            "object_missing",
            f"{job.model_label} {job.object_id} no longer exists; nothing was written.",
        )
    field = instance._meta.get_field(job.field_name)
    name = committing.write_file(job, instance, field, payload)
    outcome = _commit(job, token, instance, field, name)
    if outcome != State.SAVED:
        committing.remove_quietly(field.storage, name)
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
    instance = load_instance(job)
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


def _commit(job: ImageJob, token: str, instance: models.Model, field: Any, name: str) -> str:
    """Commit ``name`` to the field (:func:`committing.commit`); fail the job if it lost.

    Returns ``saved``, or :data:`LOST` when another worker committed first (its
    lease expired under this one), or ``failed``; in both of the latter the file
    is the caller's to delete.
    """
    outcome = committing.commit(job, token, instance, field, name)
    if outcome in (State.SAVED, LOST):
        return outcome
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


def make_thumbnails(job_id: str) -> str:
    """Generate the thumbnails of a saved job, then mark it ``done``."""
    job = load_job(job_id)
    if job is None:
        return "missing"
    if job.state != State.SAVED:
        return job.state
    claim = status.claim(job.pk, state=State.SAVED, count=False)
    if claim.token is None:
        if claim.state != State.SAVED:
            return claim.state
        raise JobBusy(job_id, claim.retry_in)  # a duplicate while the first still works
    instance = load_instance(job)
    if instance is None:
        return _fail(
            job, "object_missing", "The object was deleted before its thumbnails were made."
        )
    marked_done: list[bool] = []
    try:
        # The job turns done in the transaction that records the thumbnails.
        records = generate_thumbnails(
            instance,
            job.field_name,
            job.content_type,
            on_recorded=lambda: marked_done.append(status.mark_done(job.pk)),
        )
    except ImageRejected as exc:
        return _fail(job, exc.code, str(exc))
    except Exception as exc:
        _release_quietly(job.pk, claim.token)
        raise StorageFailure(job_id, exc) from exc
    if marked_done[0]:
        job.refresh_from_db()
        send_robust(thumbnails_ready, sender=type(instance), job=job, thumbnails=records)
    return State.DONE


def fail_after_retries(job_id: str, code: str, error: BaseException) -> None:
    """End a job whose retries are exhausted, cleaning its staged payload."""
    job = load_job(job_id)
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
