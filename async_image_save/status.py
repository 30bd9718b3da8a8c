"""Job state transitions: each one a single compare-and-set UPDATE.

A transition names the states it may start from. Only the caller whose UPDATE
changed a row sends the matching signal, so two workers racing on the same job
(or a redelivered message) produce one signal and one effect.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import F
from django.utils import timezone

from async_image_save.models import ImageJob
from async_image_save.signals import image_failed, send_robust

logger = logging.getLogger("async_image_save")

State = ImageJob.State
#: Errors longer than this are cut, so a huge traceback cannot bloat the row.
MAX_ERROR_LENGTH = 4000


def transition(job_id: Any, from_states: tuple[str, ...], to_state: str, **fields: Any) -> bool:
    """Move the job to ``to_state`` if it is in one of ``from_states``; True if it moved."""
    fields.setdefault("updated_at", timezone.now())
    changed = ImageJob.objects.filter(pk=job_id, state__in=from_states).update(
        state=to_state, **fields
    )
    return changed == 1


def count_attempt(job_id: Any) -> None:
    """Record that a worker started on the job (one UPDATE, whatever the state)."""
    ImageJob.objects.filter(pk=job_id).update(attempts=F("attempts") + 1, updated_at=timezone.now())


def mark_saved(job_id: Any, saved_name: str) -> bool:
    """``pending`` -> ``saved``, remembering the stored file name."""
    return transition(job_id, (State.PENDING,), State.SAVED, saved_name=saved_name)


def mark_done(job_id: Any) -> bool:
    """``saved`` -> ``done``."""
    return transition(job_id, (State.SAVED,), State.DONE)


def mark_failed(job_id: Any, code: str, error: str) -> bool:
    """Any unfinished state -> ``failed`` with a machine-readable code and a message.

    Logs the failure and sends :data:`~async_image_save.signals.image_failed` once.
    """
    error = str(error)[:MAX_ERROR_LENGTH]
    moved = transition(
        job_id, (State.PENDING, State.SAVED), State.FAILED, error_code=code, error=error
    )
    if moved:
        logger.warning("async_image_save job %s failed (%s): %s", job_id, code, error)
        job = ImageJob.objects.filter(pk=job_id).first()
        if job is not None:
            send_robust(image_failed, sender=ImageJob, job=job, code=code, error=error)
    return moved
