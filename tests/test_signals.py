"""Signals: image_saved, thumbnails_ready and image_failed, each at most once per job.

Receivers connected here live in the pytest process, so the jobs run in-process
(``run_jobs_eagerly`` / the processing functions); a worker subprocess's
receivers could not be observed from here.
"""

from __future__ import annotations

import logging
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from async_image_save import processing, save_image, status, tasks
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.signals import image_failed, image_saved, thumbnails_ready
from async_image_save.testing import make_image_file, run_jobs_eagerly
from tests.models import Photo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("send_on_commit_thread")]
State = ImageJob.State


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.fixture
def received():
    """Every signal sent, as (signal name, sender, kwargs)."""
    log = []
    receivers = {}
    for name, signal in (
        ("image_saved", image_saved),
        ("thumbnails_ready", thumbnails_ready),
        ("image_failed", image_failed),
    ):

        def receiver(sender, signal=None, _name=name, **kwargs):
            log.append((_name, sender, kwargs))

        receivers[name] = (signal, receiver)
        signal.connect(receiver, weak=False)
    yield log
    for signal, receiver in receivers.values():
        signal.disconnect(receiver)


def names(log) -> list[str]:
    return [entry[0] for entry in log]


@pytest.fixture
def captured(monkeypatch):
    """The (message, body) pairs save_image() publishes, not sent anywhere."""
    sent = []
    monkeypatch.setattr(tasks, "publish", lambda message, body: sent.append((message, body)))
    return sent


def queue_job(upload, capture, captured, **kwargs):
    photo = Photo.objects.create()
    with capture(execute=True):
        job = save_image(upload, photo, **kwargs)
    [(message, body)] = captured
    return photo, job, message, body


def deliver(message, body) -> str:
    """What the save task does with one delivery of ``message``."""
    return processing.save_upload(
        message["job_id"], body, model=message["model"], pk=message["pk"], field=message["field"]
    )


def test_each_signal_once_when_the_message_is_delivered_twice(
    media, received, captured, django_capture_on_commit_callbacks
):
    photo, job, message, body = queue_job(
        make_image_file("twice.jpg", size=(400, 300)), django_capture_on_commit_callbacks, captured
    )
    assert deliver(message, body) == State.SAVED
    assert deliver(message, body) == State.SAVED  # the redelivery: nothing to do
    assert processing.make_thumbnails(message["job_id"]) == State.DONE
    assert processing.make_thumbnails(message["job_id"]) == State.DONE
    assert deliver(message, body) == State.DONE  # a late third copy

    assert names(received) == ["image_saved", "thumbnails_ready"]
    photo.refresh_from_db()
    files = os.listdir(os.path.join(media, "photos"))
    assert sorted(files) == sorted([os.path.basename(photo.image.name), "thumbs"])
    assert ImageJob.objects.get(pk=job.pk).attempts == 1


def test_image_saved_arguments(media, received, captured, django_capture_on_commit_callbacks):
    photo, job, message, body = queue_job(
        make_image_file("args.jpg"), django_capture_on_commit_callbacks, captured
    )
    deliver(message, body)
    [(name, sender, kwargs)] = [e for e in received if e[0] == "image_saved"]
    photo.refresh_from_db()
    assert sender is Photo
    assert kwargs["field_name"] == "image"
    assert kwargs["name"] == photo.image.name
    assert kwargs["instance"].pk == photo.pk
    assert kwargs["instance"].image.name == photo.image.name
    assert kwargs["job"].pk == job.pk
    assert (kwargs["job"].state, kwargs["job"].saved_name) == (State.SAVED, photo.image.name)


def test_thumbnails_ready_arguments(media, received, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file("thumbs.jpg", size=(400, 300)), photo)
    assert names(received) == ["image_saved", "thumbnails_ready"]
    _name, sender, kwargs = received[1]
    assert sender is Photo
    assert kwargs["job"].pk == job.pk
    assert kwargs["job"].state == State.DONE
    assert {(t.spec, t.width, t.height) for t in kwargs["thumbnails"]} == {
        ("small", 200, 150),
        ("medium", 400, 300),
    }
    assert all(isinstance(t, Thumbnail) and t.pk for t in kwargs["thumbnails"])


def test_no_thumbnails_ready_without_thumbnails(
    media, received, django_capture_on_commit_callbacks
):
    photo = Photo.objects.create()
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), photo, thumbnails=False)
    assert names(received) == ["image_saved"]
    assert ImageJob.objects.get(pk=job.pk).state == State.DONE


def test_image_failed_once_when_mark_failed_is_called_twice(received):
    photo = Photo.objects.create()
    from django.contrib.contenttypes.models import ContentType

    job = ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="f.jpg",
        size=1,
        sha256="0" * 64,
    )
    assert status.mark_failed(job.pk, "storage_error", "first") is True
    assert status.mark_failed(job.pk, "other_code", "second") is False
    assert names(received) == ["image_failed"]
    _name, sender, kwargs = received[0]
    assert sender is ImageJob
    assert (kwargs["code"], kwargs["error"]) == ("storage_error", "first")
    assert kwargs["job"].pk == job.pk
    job.refresh_from_db()
    assert (job.error_code, job.error) == ("storage_error", "first")


def test_failed_pipeline_sends_image_failed_once(
    media, received, captured, django_capture_on_commit_callbacks
):
    _photo, job, message, body = queue_job(
        SimpleUploadedFile("bad.jpg", b"not an image", "image/jpeg"),
        django_capture_on_commit_callbacks,
        captured,
    )
    assert deliver(message, body) == State.FAILED
    assert deliver(message, body) == State.FAILED
    assert processing.make_thumbnails(message["job_id"]) == State.FAILED
    assert names(received) == ["image_failed"]
    assert received[0][2]["code"] == "not_an_image"


@pytest.mark.parametrize("signal", [image_saved, thumbnails_ready], ids=["saved", "ready"])
def test_a_raising_receiver_does_not_break_the_pipeline(
    signal, media, received, caplog, django_capture_on_commit_callbacks
):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    after = []

    def later(sender, **kwargs):
        after.append(kwargs["job"].pk)

    signal.connect(broken, weak=False)
    signal.connect(later, weak=False)  # connected after the broken one
    try:
        photo = Photo.objects.create()
        with (
            caplog.at_level(logging.ERROR, logger="async_image_save"),
            run_jobs_eagerly(),
            django_capture_on_commit_callbacks(execute=True),
        ):
            job = save_image(make_image_file("robust.jpg", size=(300, 200)), photo)
    finally:
        signal.disconnect(broken)
        signal.disconnect(later)
    job.refresh_from_db()
    assert job.state == State.DONE, (job.error_code, job.error)
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2
    # The other receivers still ran, and the error was logged, not swallowed silently.
    assert names(received) == ["image_saved", "thumbnails_ready"]
    assert after == [job.pk]
    assert "signal receiver" in caplog.text and "raised" in caplog.text
    assert any(r.exc_info and "receiver bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_raising_image_failed_receiver_still_fails_the_job(received, caplog):
    from django.contrib.contenttypes.models import ContentType

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    photo = Photo.objects.create()
    job = ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="f.jpg",
        size=1,
        sha256="0" * 64,
    )
    image_failed.connect(broken, weak=False)
    try:
        assert status.mark_failed(job.pk, "storage_error", "x") is True
    finally:
        image_failed.disconnect(broken)
    assert ImageJob.objects.get(pk=job.pk).state == State.FAILED
    assert names(received) == ["image_failed"]
