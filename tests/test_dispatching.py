"""Sending a committed job's message from the background pool (async_image_save.dispatching).

``tasks.publish`` is replaced by a recorder that can hold the send, so each test
sees what the request thread did before the message left. These are unit tests:
the two that set Celery's ``task_always_eager`` check the support for projects
that test that way. The default background send through a real broker and a
real worker process is covered end to end by ``test_e2e_redis.py``,
``test_e2e_brokers.py`` and ``test_faults.py``.
"""

from __future__ import annotations

import hashlib
import logging
import threading

import pytest
from celery import Celery, current_app
from django.db import transaction

from async_image_save import dispatching, process_stored, save_image, wait_for_publishes
from async_image_save.models import ImageJob
from async_image_save.payload import decode
from async_image_save.testing import make_image_file
from tests.models import Photo


class HeldPublish:
    """A stand-in for ``tasks.publish``: records each send and, until released, holds it."""

    def __init__(self, *, hold_first_only: bool = False, error: Exception | None = None) -> None:
        self.released = threading.Event()
        self.hold_first_only = hold_first_only
        self.error = error
        self.sent: list[str] = []
        self.bodies: list[bytes | str] = []
        self.threads: list[int] = []
        self.apps: list[Celery] = []

    def __call__(self, message: dict, body: bytes | str) -> None:
        first = not self.threads
        self.threads.append(threading.get_ident())
        self.apps.append(current_app._get_current_object())
        if first or not self.hold_first_only:
            assert self.released.wait(10), "the test never released the send"
        if self.error is not None:
            raise self.error
        self.sent.append(message["job_id"])
        self.bodies.append(body)


@pytest.fixture
def held(monkeypatch):
    publish = HeldPublish()
    monkeypatch.setattr("async_image_save.tasks.publish", publish)
    monkeypatch.setattr("async_image_save.tasks.publish_stored", publish)
    yield publish
    publish.released.set()  # never leave a pool thread waiting
    assert wait_for_publishes()


@pytest.mark.django_db
def test_save_image_returns_before_the_message_is_sent(held, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), photo)
    assert held.sent == []  # the commit returned; a pool thread is still sending
    assert wait_for_publishes(timeout=0.05) is False
    held.released.set()
    assert wait_for_publishes() is True
    assert held.sent == [job.pk.hex]
    assert held.threads != [threading.get_ident()]


@pytest.mark.django_db
def test_process_stored_is_sent_from_the_pool_too(held, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = process_stored("uploads/direct.jpg", photo)
    assert held.sent == []
    held.released.set()
    assert wait_for_publishes()
    assert held.sent == [job.pk.hex]


@pytest.mark.django_db
def test_turned_off_the_commit_returns_after_the_send(
    held, settings, django_capture_on_commit_callbacks
):
    settings.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = False
    held.released.set()
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), photo)
    assert held.sent == [job.pk.hex]
    assert held.threads == [threading.get_ident()]


@pytest.mark.django_db(transaction=True)
def test_a_failed_background_send_fails_the_job_and_logs_it(monkeypatch, caplog):
    publish = HeldPublish(error=ConnectionError("broker down"))
    publish.released.set()
    monkeypatch.setattr("async_image_save.tasks.publish", publish)
    photo = Photo.objects.create()
    with caplog.at_level(logging.ERROR, logger="async_image_save"):
        job = save_image(make_image_file(), photo)  # outside a transaction: sent at once
        assert wait_for_publishes()
    assert job.state == ImageJob.State.PENDING  # the pool thread never touches this object
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("failed", "broker_unreachable")
    assert "ConnectionError: broker down" in job.error
    assert f"could not queue job {job.pk.hex}" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_durable_mode_confirms_the_publish_from_the_pool(held, settings):
    settings.ASYNC_IMAGE_SAVE_DURABLE = True
    held.released.set()
    job = save_image(make_image_file(), Photo.objects.create())
    assert wait_for_publishes()
    job.refresh_from_db()
    assert held.sent == [job.pk.hex]
    assert job.published_at is not None  # written by the pool thread's own connection
    # The outbox row is written in the request, so the request hashed the bytes.
    assert job.sha256 == hashlib.sha256(make_image_file().read()).hexdigest()


@pytest.mark.django_db(transaction=True)
def test_the_pool_thread_hashes_and_signs_what_the_request_left_unhashed(held, settings):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 1024 * 1024  # the frame is the message body
    held.released.set()
    upload = make_image_file()
    data = upload.read()
    job = save_image(upload, Photo.objects.create())
    assert job.sha256 == ""  # the request did not hash
    assert wait_for_publishes()
    [body] = held.bodies
    payload = decode(body)
    assert payload.sha256 == hashlib.sha256(data).hexdigest()
    payload.verify(None, job_id=job.pk.hex)


@pytest.mark.django_db
def test_a_full_pool_sends_on_the_callers_thread(monkeypatch, django_capture_on_commit_callbacks):
    publish = HeldPublish(hold_first_only=True)
    monkeypatch.setattr("async_image_save.tasks.publish", publish)
    monkeypatch.setattr(dispatching, "MAX_IN_FLIGHT", 1)
    photo = Photo.objects.create()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first = save_image(make_image_file("first.jpg"), photo)
        with django_capture_on_commit_callbacks(execute=True):
            second = save_image(make_image_file("second.jpg"), photo)
        # The first send holds the only slot: the second went out on this thread.
        assert publish.sent == [second.pk.hex]
        assert publish.threads[1] == threading.get_ident() != publish.threads[0]
    finally:
        publish.released.set()
    assert wait_for_publishes()
    assert publish.sent == [second.pk.hex, first.pk.hex]


@pytest.mark.django_db
def test_the_callers_celery_app_is_current_in_the_pool(held, django_capture_on_commit_callbacks):
    held.released.set()
    previous = current_app._get_current_object()
    app = Celery("test-dispatching", set_as_current=False)
    app.set_current()  # this thread's app only, as a test or a multi-app project may do
    try:
        with django_capture_on_commit_callbacks(execute=True):
            save_image(make_image_file(), Photo.objects.create())
        assert wait_for_publishes()
    finally:
        previous.set_current()
    assert held.apps == [app]
    assert held.threads != [threading.get_ident()]


@pytest.mark.django_db(transaction=True)
def test_only_the_committed_job_is_sent(held):
    held.released.set()
    photo = Photo.objects.create()
    with pytest.raises(RuntimeError), transaction.atomic():
        save_image(make_image_file("rolled-back.jpg"), photo)
        raise RuntimeError("the view failed after save_image()")
    with transaction.atomic():
        kept = save_image(make_image_file("kept.jpg"), photo)
    assert wait_for_publishes()
    assert held.sent == [kept.pk.hex]


@pytest.mark.django_db
def test_without_a_pool_at_shutdown_the_caller_sends(
    monkeypatch, django_capture_on_commit_callbacks
):
    from async_image_save import background

    def shut_down(*args, **kwargs):
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    publish = HeldPublish()
    publish.released.set()
    monkeypatch.setattr("async_image_save.tasks.publish", publish)
    monkeypatch.setattr(background, "submit", shut_down)
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), Photo.objects.create())
    assert publish.sent == [job.pk.hex]
    assert publish.threads == [threading.get_ident()]


@pytest.mark.django_db
def test_with_task_always_eager_the_caller_sends(held, django_capture_on_commit_callbacks):
    """Eager tasks run inside the send: on a pool thread they could not see the test's rows."""
    held.released.set()
    app = current_app._get_current_object()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job = save_image(make_image_file(), Photo.objects.create())
    finally:
        app.conf.task_always_eager = previous
    assert held.sent == [job.pk.hex]
    assert held.threads == [threading.get_ident()]


@pytest.mark.django_db
def test_a_project_testing_with_task_always_eager_gets_its_job_done(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    """The common test setup of a Celery project: the real task runs in the test's transaction."""
    settings.MEDIA_ROOT = str(tmp_path)
    app = current_app._get_current_object()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job = save_image(make_image_file("eager.jpg"), Photo.objects.create())
    finally:
        app.conf.task_always_eager = previous
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("done", "")
    assert (tmp_path / job.saved_name).is_file()


@pytest.mark.django_db
def test_a_queued_storage_sends_its_transfer_from_the_pool(
    settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages

    from async_image_save import transfer
    from tests.test_storage import storages_config

    released, sent = threading.Event(), []

    def enqueue(storage, name, **options):
        released.wait(10)
        sent.append((storage, name, threading.get_ident()))

    monkeypatch.setattr(transfer, "enqueue", enqueue)
    settings.STORAGES = storages_config(tmp_path)
    queued = storages["queued"]
    try:
        with django_capture_on_commit_callbacks(execute=True):
            name = queued.save("photos/pool.jpg", ContentFile(b"bytes of a photo"))
        assert sent == []  # the commit returned; the transfer is still being sent
    finally:
        released.set()
    assert wait_for_publishes()
    assert [(s, n) for s, n, _ in sent] == [("storages:queued", name)]
    assert sent[0][2] != threading.get_ident()
