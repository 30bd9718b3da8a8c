"""What a worker step starts from: the job a message names, its object, its payload.

:func:`load_job` and :func:`load_instance` read the job row and the object it
targets; :func:`matches_message` checks the message names that same target.
The payload arrives inline in the message or as a reference to a staging
store; :func:`unpack` turns either into a verified, validated
:class:`~async_image_save.payload.UploadPayload`. :func:`discard_staged` removes
the staged copy once the job no longer needs it.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models

from async_image_save.exceptions import PayloadDecodeError, PayloadMissing
from async_image_save.imaging import validate_image
from async_image_save.models import ImageJob
from async_image_save.payload import UploadPayload, decode
from async_image_save.staging import resolve_ref
from async_image_save.worker_errors import StorageFailure

logger = logging.getLogger("async_image_save")


def load_job(job_id: str) -> ImageJob | None:
    """The job ``job_id`` names, or ``None`` (logged) if there is none."""
    try:
        job = ImageJob.objects.select_related("content_type").filter(pk=job_id).first()
    except (ValidationError, ValueError):  # not a UUID: a forged or corrupted message
        logger.warning("async_image_save: %r is not a job id; message dropped", job_id)
        return None
    if job is None:
        logger.warning("async_image_save job %s no longer exists; message dropped", job_id)
    return job


def load_instance(job: ImageJob) -> models.Model | None:
    """The object the job targets, or ``None`` if it (or its model) is gone."""
    model = job.content_type.model_class()
    if model is None:
        return None
    return model._default_manager.filter(pk=job.object_id).first()


def matches_message(job: ImageJob, model: str, pk: str, field: str) -> bool:
    """Whether the message's ``model``, ``pk`` and ``field`` are those of the job."""
    model_cls = job.content_type.model_class()
    return (
        model_cls is not None
        and model_cls._meta.label_lower == str(model).lower()
        and job.object_id == str(pk)
        and job.field_name == field
    )


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


def unpack(job: ImageJob, body: bytes | str) -> UploadPayload:
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
    payload.verify(job.sha256 or None, job_id=job.pk.hex)
    if not job.sha256:  # hashed after the request, by the thread that sent the task
        ImageJob.objects.filter(pk=job.pk).update(sha256=payload.sha256)
        job.sha256 = payload.sha256
    validate_image(payload.data)
    return payload
