"""Job state transitions: each one a single compare-and-set UPDATE.

A transition names the states it may start from. Only the caller whose UPDATE
changed a row sends the matching signal, so two workers racing on the same job
(or a redelivered message) produce one signal and one effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import F, Q
from django.utils import timezone

from async_image_save import holders
from async_image_save.conf import conf
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


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: a token when this worker may proceed."""

    token: str | None
    state: str
    attempts: int = 0
    retry_in: float = 0.0


def claim(job_id: Any, *, state: str = State.PENDING, count: bool = True) -> Claim:
    """Take the job's lease if it is in ``state`` and nobody holds an unexpired one.

    One UPDATE (compare-and-set) that also counts the attempt in the database
    (unless ``count`` is false), so a message that crashes its worker every time
    is still counted. A lease whose holder is a process of this machine that
    has died is taken over at once (:mod:`async_image_save.holders`).
    """
    now = timezone.now()
    token = holders.new_token()
    lease = timedelta(seconds=conf.ASYNC_IMAGE_SAVE_LEASE_SECONDS)
    fields: dict[str, Any] = {"claimed_by": token, "claimed_until": now + lease, "updated_at": now}
    if count:
        fields["attempts"] = F("attempts") + 1
    jobs = ImageJob.objects.filter(pk=job_id, state=state)
    taken = jobs.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)).update(**fields)
    row = _lease_row(job_id)
    if row is None:
        return Claim(None, "missing")
    if not taken and row["state"] == state and holders.holder_is_dead(row["claimed_by"]):
        taken = jobs.filter(claimed_by=row["claimed_by"]).update(**fields)
        if taken:
            logger.warning(
                "async_image_save job %s: the worker process holding it died; taking it over",
                job_id,
            )
            row = _lease_row(job_id) or row
    if taken:
        return Claim(token, row["state"], row["attempts"])
    until = row["claimed_until"]
    retry_in = max(1.0, (until - now).total_seconds()) if until else 1.0
    return Claim(None, row["state"], row["attempts"], retry_in)


def _lease_row(job_id: Any) -> dict[str, Any] | None:
    fields = ("state", "attempts", "claimed_by", "claimed_until")
    return ImageJob.objects.filter(pk=job_id).values(*fields).first()


def note_partial(job_id: Any, name: str) -> None:
    """Record the name a worker is about to write, so a crash mid-write can be cleaned."""
    ImageJob.objects.filter(pk=job_id).update(partial_name=name)


def release(job_id: Any, token: str) -> None:
    """Give the lease back (after a failed attempt), so a retry can claim at once."""
    ImageJob.objects.filter(pk=job_id, claimed_by=token).update(claimed_until=None)


def current_state(job_id: Any) -> str:
    """The job's state now (``"missing"`` if the row is gone)."""
    state = ImageJob.objects.filter(pk=job_id).values_list("state", flat=True).first()
    return state or "missing"


def mark_saved(job_id: Any, saved_name: str, *, token: str | None = None) -> bool:
    """``pending`` -> ``saved``, remembering the stored file name.

    With ``token``, only the worker holding that lease may do it.
    """
    if token is None:
        return transition(job_id, (State.PENDING,), State.SAVED, saved_name=saved_name)
    changed = ImageJob.objects.filter(pk=job_id, state=State.PENDING, claimed_by=token).update(
        state=State.SAVED,
        saved_name=saved_name,
        partial_name="",
        claimed_until=None,
        updated_at=timezone.now(),
    )
    return changed == 1


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
