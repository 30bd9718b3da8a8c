"""Sending a committed job's task: on a background thread (the default) or at once.

``save_image()``, ``process_stored()`` and ``QueuedStorage`` (its transfer task)
hand their message to :func:`after_commit`.
By default (``ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND``) a thread of the
per-process pool (``background.py``) stages the payload and publishes the task,
so neither the request nor ``transaction.commit()`` waits for the broker or the
staging store, nor for their retries when one is slow or down. A failure still
marks the job ``failed`` (``broker_unreachable``) and is logged, from that thread.

At most :data:`MAX_IN_FLIGHT` messages wait for the pool per process; the next
one is sent on the caller's thread, so a broker that stops answering slows the
requests down instead of piling their uploads up in memory. The pool's threads
finish their work when the interpreter exits normally; a process killed in
between leaves the job ``pending``, and ``async_image_save_recover`` re-sends
or fails it (a staged payload is written by the same thread, before the publish).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from async_image_save import background, status
from async_image_save.conf import conf
from async_image_save.models import ImageJob
from async_image_save.payload import UploadPayload

logger = logging.getLogger("async_image_save")

#: Messages handed to the pool and not sent yet, per process; more are sent in place.
MAX_IN_FLIGHT = background.MAX_THREADS * 4

_lock = threading.Lock()
_in_flight: set[Future[None]] = set()


def after_commit(send: Callable[..., None], *args: Any, job: ImageJob | None = None) -> None:
    """Run ``send(*args)`` now: on a pool thread, or here when that is off or full.

    Also here with Celery's ``task_always_eager``, whose tasks run inside the send.

    Called from ``transaction.on_commit``; ``send`` never raises (it records
    its failure). Only when it runs here is ``job``, the caller's object,
    passed on (as ``job=``) to be marked failed too: another thread never
    touches it.
    """
    from celery import current_app  # tasks resolve against the caller's current app

    app = current_app._get_current_object()
    here = {"job": job} if job is not None else {}
    # task_always_eager runs the task inside the send: it must see this thread's
    # (test) transaction, so it runs here.
    if not conf.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND or app.conf.task_always_eager:
        send(*args, **here)
        return
    future: Future[None] | None = None
    with _lock:
        if len(_in_flight) < MAX_IN_FLIGHT:
            with contextlib.suppress(RuntimeError):  # the interpreter is shutting down
                future = background.submit(_send_detached, app, send, args)
                _in_flight.add(future)
    if future is None:  # too many waiting, or no pool any more: send it here
        send(*args, **here)
        return
    future.add_done_callback(_forget)


def _send_detached(app: Any, send: Callable[..., None], args: tuple[Any, ...]) -> None:
    app.set_current()
    close_old_connections()  # as a request does: never reuse a broken or expired one
    try:
        send(*args)
    except Exception:  # send() fails the job itself; this is a bug, made visible
        first = args[0] if args else ""
        what = first.get("job_id") if isinstance(first, dict) else first  # never the bytes
        logger.exception("async_image_save: sending %s failed", what)
    finally:
        close_old_connections()


def _forget(future: Future[None]) -> None:
    with _lock:
        _in_flight.discard(future)


def wait_for_publishes(timeout: float | None = 10.0) -> bool:
    """Wait until every message handed to the background has been sent (or failed).

    For tests, scripts and management commands that read a job's state right
    after ``save_image()``. Returns ``False`` if some were still being sent
    after ``timeout`` seconds (``None``: wait as long as it takes).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            pending = list(_in_flight)
        if not pending:
            return True
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        wait_futures(pending, timeout=left)


def _forget_in_flight() -> None:
    global _lock, _in_flight
    _lock, _in_flight = threading.Lock(), set()  # the parent's threads do not exist here


os.register_at_fork(after_in_child=_forget_in_flight)


def dispatch(
    message: dict[str, Any],
    payload: UploadPayload | None,
    codec: str,
    stager: Any,
    *,
    job: ImageJob | None = None,
) -> None:
    """Hash and pack the payload, stage it if needed and publish the task chain.

    On failure, the job is marked failed.

    Runs after commit, so the worker always finds the committed job row.
    ``payload`` is hashed here if it is not yet, and packed with ``codec`` into
    a frame whose sha256 is signed to the job: joined into the message body,
    or staged when there is a ``stager``. It is ``None`` when the
    (transactional) stager holds the frame already. ``job`` is the caller's
    object, also marked failed on failure (only when this runs on the caller's
    thread).
    """
    from async_image_save.tasks import publish  # tasks imports Celery; keep it lazy

    job_id = message["job_id"]
    try:
        frame = None
        if payload is not None:
            frame = payload.with_sha256().encode_parts(codec, signed_for=job_id)
        if stager is not None:
            if frame is not None:
                stager.put_parts(job_id, frame)
            body: bytes | str = stager.ref(job_id)
        else:
            assert frame is not None, "an inline payload travels in the frame"
            body = b"".join(frame)
        publish(message, body)
        if stager is not None and stager.transactional:
            # Confirmed: recovery only re-publishes outbox rows never confirmed.
            ImageJob.objects.filter(pk=job_id).update(published_at=timezone.now())
    except Exception as exc:  # any broker or staging client error ends the same way
        if stager is not None and stager.transactional:
            # Durable mode: the payload is safe in the outbox; the job stays pending
            # and async_image_save_recover publishes it once the broker is back.
            logger.warning(
                "async_image_save could not publish job %s (%s); it stays in the outbox",
                job_id,
                exc,
            )
            return
        # A payload staged before the publish failed is kept: the admin's "Retry"
        # action and async_image_save_recover can still send it.
        logger.exception("async_image_save could not queue job %s", job_id)
        error = (
            f"The job could not be queued ({type(exc).__name__}: {exc}). Check that the Celery "
            "broker (and the staging store) is reachable; a staged upload can be retried, "
            "an inline one must be uploaded again."
        )
        _fail(job_id, error, job)


def dispatch_stored(message: dict[str, Any], name: str, *, job: ImageJob | None = None) -> None:
    """Publish a :func:`~async_image_save.process_stored` job; on failure, fail the job."""
    from async_image_save.tasks import publish_stored

    try:
        publish_stored(message, name)
    except Exception as exc:
        logger.exception("async_image_save could not queue job %s", message["job_id"])
        error = (
            f"The job could not be queued ({type(exc).__name__}: {exc}); "
            "call process_stored() again."
        )
        _fail(message["job_id"], error, job)


def _fail(job_id: str, error: str, job: ImageJob | None) -> None:
    status.mark_failed(job_id, "broker_unreachable", error)
    if job is not None:  # the caller's object says so too (outside a transaction)
        job.state, job.error_code, job.error = ImageJob.State.FAILED, "broker_unreachable", error
