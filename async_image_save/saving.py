"""``save_image()``: the one entry point that views, forms and the admin call."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.files import File
from django.db import models, router, transaction

from async_image_save import dispatching
from async_image_save.conf import conf
from async_image_save.exceptions import InvalidUpload
from async_image_save.models import ImageJob
from async_image_save.payload import UploadPayload
from async_image_save.staging import get_stager, inline_max_bytes


def file_field_names(model: type[models.Model]) -> list[str]:
    """Names of the concrete ``FileField``/``ImageField`` fields of ``model``."""
    return [f.name for f in model._meta.concrete_fields if isinstance(f, models.FileField)]


def resolve_field_name(instance: models.Model, field_name: str | None) -> str:
    """Return the file field to fill, or raise naming the candidates."""
    candidates = file_field_names(type(instance))
    label = instance._meta.label
    if field_name is None:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ValueError(f"{label} has no FileField or ImageField for save_image() to fill.")
        raise ValueError(
            f"{label} has several file fields ({', '.join(candidates)}); "
            "pass field_name= to say which one save_image() should fill."
        )
    if field_name not in candidates:
        raise ValueError(
            f"{label}.{field_name} is not a FileField or ImageField; "
            f"file fields of {label}: {', '.join(candidates) or 'none'}."
        )
    return field_name


def _check_upload(upload: Any) -> None:
    if not isinstance(upload, File):
        raise InvalidUpload(
            f"save_image() needs a Django File or UploadedFile (e.g. form.cleaned_data['photo']), "
            f"got {type(upload).__name__}."
        )


def _check_target(instance: Any, thumbnails: Any, queue: Any, user: Any) -> None:
    """Checks shared by save_image() and process_stored()."""
    if not isinstance(instance, models.Model):
        raise InvalidUpload(
            "save_image() needs a model instance as its second argument, "
            f"got {type(instance).__name__}."
        )
    if instance.pk is None or instance._state.adding:
        raise ValueError(
            f"{instance._meta.label} instance is not saved yet: call instance.save() before "
            "save_image(), so the worker can find it by its primary key."
        )
    if not isinstance(thumbnails, bool):
        raise TypeError(f"thumbnails must be True or False, got {thumbnails!r}.")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise TypeError(f"queue must be a non-empty queue name or None, got {queue!r}.")
    if user is not None and not hasattr(user, "is_authenticated"):
        raise TypeError(
            f"user must be a user object (request.user) or None, got {type(user).__name__}."
        )


def save_image(
    upload: File,
    instance: models.Model,
    field_name: str | None = None,
    *,
    thumbnails: bool = True,
    queue: str | None = None,
    user: Any = None,
) -> ImageJob:
    """Queue ``upload`` to be saved into ``instance.<field_name>`` by a Celery worker.

    Reads the upload once and records an :class:`ImageJob` in the current
    transaction. When that transaction commits (at once outside a transaction)
    the task is sent, by default from a background thread so that the request
    waits neither for the broker nor for hashing the bytes
    (``ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND``): that thread computes the
    sha256 and signs it to the job (see :mod:`~async_image_save.signatures`);
    the worker checks it and records it on the job. Returns the job
    immediately; its ``state`` is ``pending``. If the broker cannot be reached,
    the job is marked ``failed`` with code ``broker_unreachable`` and the error
    is logged.
    """
    _check_upload(upload)
    _check_target(instance, thumbnails, queue, user)
    field_name = resolve_field_name(instance, field_name)
    codec = conf.ASYNC_IMAGE_SAVE_SERIALIZER
    payload: UploadPayload | None = UploadPayload.from_upload(upload, hashed=False)
    staged = conf.ASYNC_IMAGE_SAVE_DURABLE or payload.frame_size(codec) > inline_max_bytes()
    stager = get_stager() if staged else None
    outbox = stager is not None and stager.transactional
    if outbox:  # staged in this transaction: hashed here, and the row holds the sha256
        payload = payload.with_sha256()
    job_id = uuid.uuid4()
    job = _create_job(job_id, payload, instance, field_name, user, codec, stager, thumbnails, queue)
    message = job_message(job, instance._meta.label)
    if outbox:
        # The outbox: the payload commits or rolls back with the job row.
        stager.put_parts(job_id.hex, payload.encode_parts(codec, signed_for=job_id.hex))
        payload = None
    # Hashing, staging (if needed) and the publish happen once the job row is
    # committed, by default on a background thread (dispatching.after_commit).
    transaction.on_commit(
        lambda: dispatching.after_commit(
            dispatching.dispatch, message, payload, codec, stager, job=job
        ),
        using=router.db_for_write(ImageJob),
    )
    return job


def _create_job(
    job_id: uuid.UUID,
    payload: UploadPayload,
    instance: models.Model,
    field_name: str,
    user: Any,
    codec: str,
    stager: Any,
    thumbnails: bool,
    queue: str | None,
) -> ImageJob:
    owner = user if user is not None and user.is_authenticated else None
    return ImageJob.objects.create(
        id=job_id,
        content_type=ContentType.objects.get_for_model(type(instance)),
        object_id=str(instance.pk),
        field_name=field_name,
        owner=owner,
        source_name=payload.name,
        size=payload.size,
        sha256=payload.sha256 or "",  # unknown until the sending thread hashes the bytes
        codec=codec,
        staged_ref=stager.ref(job_id.hex) if stager else "",
        thumbnails=thumbnails,
        queue=queue or conf.ASYNC_IMAGE_SAVE_QUEUE or "",
        task_id=str(uuid.uuid4()),
    )


def job_message(job: ImageJob, model_label: str | None = None) -> dict[str, Any]:
    """The task arguments for ``job``: primitives only, re-checked by the worker."""
    return {
        "job_id": job.pk.hex,
        "model": model_label or job.model_label,
        "pk": job.object_id,
        "field": job.field_name,
        "queue": job.queue or None,
        "thumbnails": job.thumbnails,
        "task_id": job.task_id,
    }


def check_stored_name(name: Any) -> str:
    """Validate a storage name given to :func:`process_stored` (also re-run by the worker)."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"process_stored() needs the stored file's name (a str), got {name!r}.")
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts or any(ord(ch) < 32 for ch in name):
        raise ValueError(
            f"{name!r} is not a safe storage name: no absolute paths, '..' parts or control "
            "characters (use the key your direct-upload flow generated)."
        )
    return name


def process_stored(
    name: str,
    instance: models.Model,
    field_name: str | None = None,
    *,
    thumbnails: bool = True,
    queue: str | None = None,
    user: Any = None,
) -> ImageJob:
    """Bind a file a browser already put into the field's storage, then make thumbnails.

    For direct uploads (presigned POSTs, django-s3-file-field): nothing is copied.
    The worker checks that ``name`` exists in the field's storage, is at most
    ``ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES`` and is an image Pillow accepts, records
    its size and sha256, and only then sets the field (same job states and
    signals as :func:`save_image`).
    """

    name = check_stored_name(name)
    _check_target(instance, thumbnails, queue, user)
    field_name = resolve_field_name(instance, field_name)
    owner = user if user is not None and user.is_authenticated else None
    job = ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(type(instance)),
        object_id=str(instance.pk),
        field_name=field_name,
        owner=owner,
        source_name=name.rsplit("/", 1)[-1][:255],
        size=0,
        sha256="",
        staged_ref="",
        stored_name=name,
        thumbnails=thumbnails,
        queue=queue or conf.ASYNC_IMAGE_SAVE_QUEUE or "",
        task_id=str(uuid.uuid4()),
    )
    message = job_message(job, instance._meta.label)
    using = router.db_for_write(ImageJob)
    transaction.on_commit(
        lambda: dispatching.after_commit(dispatching.dispatch_stored, message, name, job=job),
        using=using,
    )
    return job
