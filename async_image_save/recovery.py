"""Retrying failed jobs and recovering stale ones (admin action and management commands)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from async_image_save import status
from async_image_save.models import ImageJob, QueuedFile
from async_image_save.staging import resolve_ref

logger = logging.getLogger("async_image_save")
State = ImageJob.State


@dataclass(frozen=True)
class RecoveryAction:
    """What recovery did (or, in a dry run, would do) with one job."""

    job: ImageJob
    action: str  # "requeued", "thumbnails_requeued", "failed", "skipped"
    reason: str


def payload_available(job: ImageJob) -> bool:
    """Whether the job's upload bytes can still be had.

    A staged payload that still exists, or for ``process_stored()`` the file in the
    storage. Inline payloads live only inside the broker message: never re-sendable.
    """
    if job.stored_name:
        return True  # the worker checks the file itself, and fails clearly if it is gone
    if not job.staged_ref:
        return False
    try:
        stager, key = resolve_ref(job.staged_ref)
        return stager.exists(key)
    except Exception:
        logger.exception("async_image_save could not check staged payload of job %s", job.pk)
        return False


def _publish_again(job: ImageJob, *, thumbnails_only: bool) -> None:
    """Send the job's task again and touch ``updated_at``, so the next run waits again."""
    from async_image_save.saving import job_message
    from async_image_save.tasks import publish, publish_stored, publish_thumbnails

    ImageJob.objects.filter(pk=job.pk).update(updated_at=timezone.now())
    if thumbnails_only:
        publish_thumbnails(job.pk.hex, job.queue or None)
    elif job.stored_name:
        publish_stored(job_message(job), job.stored_name)
    else:
        publish(job_message(job), job.staged_ref)


def retry_job(job: ImageJob, *, dry_run: bool = False) -> RecoveryAction:
    """Send a failed job again if it can be: its file saved (thumbnails) or its payload staged."""
    if job.state != State.FAILED:
        return RecoveryAction(job, "skipped", f"the job is {job.state}, not failed")
    raced = RecoveryAction(job, "skipped", "another process changed the job meanwhile")
    if job.saved_name:
        if not dry_run:
            if not status.transition(job.pk, (State.FAILED,), State.SAVED, error="", error_code=""):
                return raced
            _publish_again(job, thumbnails_only=True)
        return RecoveryAction(
            job, "thumbnails_requeued", "the file is saved; thumbnails are made again"
        )
    if not payload_available(job):
        return RecoveryAction(
            job,
            "skipped",
            "the upload's bytes are gone (inline payload, or staged payload expired)",
        )
    if not dry_run:
        # A fresh attempt budget: the retry is a new decision, not one more delivery.
        if not status.transition(
            job.pk, (State.FAILED,), State.PENDING, error="", error_code="", attempts=0
        ):
            return raced
        _publish_again(job, thumbnails_only=False)
    return RecoveryAction(job, "requeued", "the staged payload is sent again")


def stale_jobs(older_than: timedelta) -> QuerySet[ImageJob]:
    """Unfinished jobs not updated for ``older_than``."""
    cutoff = timezone.now() - older_than
    return ImageJob.objects.filter(
        state__in=(State.PENDING, State.SAVED), updated_at__lt=cutoff
    ).order_by("created_at")


#: Jobs younger than this may still be publishing: the outbox relay leaves them alone.
UNPUBLISHED_GRACE = timedelta(seconds=30)


def publish_outbox(*, dry_run: bool = False) -> list[RecoveryAction]:
    """Publish durable-mode jobs whose message was never confirmed (broker was down)."""
    cutoff = timezone.now() - UNPUBLISHED_GRACE
    actions = []
    jobs = ImageJob.objects.filter(
        state=State.PENDING,
        staged_ref__startswith="database:",
        published_at__isnull=True,
        created_at__lt=cutoff,
    ).select_related("content_type")
    for job in jobs:
        if not dry_run:
            _publish_again(job, thumbnails_only=False)
            ImageJob.objects.filter(pk=job.pk).update(published_at=timezone.now())
        actions.append(RecoveryAction(job, "requeued", "never published (outbox)"))
    return actions


def recover_stale(older_than: timedelta, *, dry_run: bool = False) -> list[RecoveryAction]:
    """Re-send stale jobs whose payload is retrievable; fail those whose message is lost.

    Re-sending is safe: workers skip a job that is no longer pending. ``older_than``
    must exceed the longest time a message can wait in the queue, or inline jobs
    still queued would be failed.
    """
    actions = publish_outbox(dry_run=dry_run)
    handled = {a.job.pk for a in actions}
    for job in stale_jobs(older_than).exclude(pk__in=handled).select_related("content_type"):
        if job.state == State.SAVED:
            if not dry_run:
                _publish_again(job, thumbnails_only=True)
            actions.append(RecoveryAction(job, "thumbnails_requeued", "saved but never finished"))
        elif payload_available(job):
            if not dry_run:
                _publish_again(job, thumbnails_only=False)
            actions.append(RecoveryAction(job, "requeued", "its staged payload is sent again"))
        else:
            reason = (
                f"no worker finished it within {older_than} and its payload cannot be "
                "re-sent (inline in a lost message, or staged and expired); upload it again"
            )
            if not dry_run:
                status.mark_failed(job.pk, "message_lost", reason)
            actions.append(RecoveryAction(job, "failed", reason))
    return actions


def sweep_staging(*, dry_run: bool = False) -> list[tuple[str, str]]:
    """Delete staged payloads nobody needs any more; return (ref, reason) for each.

    Kept: payloads of pending jobs, and of failed jobs an admin can still retry
    (for ``ASYNC_IMAGE_SAVE_STAGING_TTL``). Redis payloads expire by themselves.
    """
    from async_image_save.conf import conf
    from async_image_save.processing import RETRYABLE_CODES
    from async_image_save.staging import get_stager

    schemes = {"database"}
    configured = conf.ASYNC_IMAGE_SAVE_STAGING
    if configured in ("directory", "storage"):
        schemes.add(configured)
    if os.path.isdir(conf.ASYNC_IMAGE_SAVE_STAGING_DIR):
        schemes.add("directory")
    keep_until = timezone.now() - timedelta(seconds=conf.ASYNC_IMAGE_SAVE_STAGING_TTL)
    removed = []
    for scheme in sorted(schemes):
        stager = get_stager(scheme)
        keys = list(stager.keys())
        jobs = {j.pk.hex: j for j in ImageJob.objects.filter(pk__in=keys)}
        for key in keys:
            job = jobs.get(key)
            if job is None:
                reason = "no such job"
            elif job.state in (State.SAVED, State.DONE):
                reason = f"job {job.state}"
            elif job.state == State.FAILED and (
                job.error_code not in RETRYABLE_CODES or job.updated_at < keep_until
            ):
                reason = f"job failed ({job.error_code})"
            else:
                continue
            if not dry_run:
                stager.delete(key)
            removed.append((stager.ref(key), reason))
    return removed


# --- QueuedStorage transfers (async_image_save.storage) ---


@dataclass(frozen=True)
class TransferRecovery:
    """What recovery did (or, in a dry run, would do) with one QueuedStorage file."""

    file: QueuedFile
    action: str  # "requeued", "skipped"
    reason: str


def recover_transfers(
    older_than: timedelta, *, retry_failed: bool = False, dry_run: bool = False
) -> list[TransferRecovery]:
    """Re-send transfers stale for ``older_than``; with ``retry_failed``, also failed ones.

    A failed transfer is sent again only when a retry can fix it (the remote was
    unreachable, the copy did not verify, the message was never queued); a
    missing local copy cannot be fixed. Re-sending is safe: the transfer claims
    its row by compare-and-set and does nothing for a file already remote.
    """
    from django.core.exceptions import ImproperlyConfigured

    from async_image_save.storage_registry import resolve_storage
    from async_image_save.transfer_state import RETRYABLE_CODES

    FileState = QueuedFile.State
    now = timezone.now()
    rows = list(
        QueuedFile.objects.filter(
            state__in=(FileState.LOCAL, FileState.TRANSFERRING), updated_at__lt=now - older_than
        ).order_by("created_at")
    )
    if retry_failed:
        rows += QueuedFile.objects.filter(state=FileState.FAILED).order_by("created_at")
    actions = []
    for row in rows:
        if row.state == FileState.FAILED and row.error_code not in RETRYABLE_CODES:
            reason = f"failed with {row.error_code}, which a retry cannot fix: {row.error}"
            actions.append(TransferRecovery(row, "skipped", reason))
            continue
        try:
            storage = resolve_storage(row.storage)
        except ImproperlyConfigured as exc:
            actions.append(TransferRecovery(row, "skipped", str(exc)))
            continue
        failed = row.state == FileState.FAILED
        if failed:
            reason = f"failed ({row.error_code}); the transfer is sent again"
        else:
            reason = f"{row.state} since {row.updated_at:%Y-%m-%d %H:%M:%S}; sent again"
        if not dry_run:
            same = QueuedFile.objects.filter(pk=row.pk, state=row.state)
            if failed:
                moved = same.update(
                    state=FileState.LOCAL, error="", error_code="", updated_at=timezone.now()
                )
            else:  # touching updated_at keeps the next run from sending it again at once
                moved = same.update(updated_at=timezone.now())
            if not moved:
                continue
            if failed:
                storage.remember(row.name, FileState.LOCAL)
            storage.queue_transfer(row.name)
        actions.append(TransferRecovery(row, "requeued", reason))
    return actions
