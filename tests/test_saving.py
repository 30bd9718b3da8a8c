"""Unit tests for async_image_save.saving.save_image, without a worker.

The Celery publish is replaced by a recorder (``async_image_save.tasks.publish``);
on_commit callbacks are captured with pytest-django's fixture. One test publishes
for real to a closed port.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import File
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from async_image_save import save_image
from async_image_save.exceptions import InvalidUpload, UploadTooLarge
from async_image_save.models import ImageJob
from async_image_save.payload import decode
from async_image_save.signals import image_failed
from async_image_save.staging import get_stager
from tests.conftest import jpeg_bytes
from tests.faults import sized_jpeg
from tests.models import Document, Note, Photo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("send_on_commit_thread")]


class PublishRecorder:
    def __init__(self, error: BaseException | None = None) -> None:
        self.calls: list[tuple[dict, bytes | str]] = []
        self.error = error

    def __call__(self, message, body):
        self.calls.append((message, body))
        if self.error is not None:
            raise self.error


@pytest.fixture
def publish(monkeypatch):
    recorder = PublishRecorder()
    monkeypatch.setattr("async_image_save.tasks.publish", recorder)
    return recorder


@pytest.fixture
def staging_dir(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    return tmp_path / "staging"


@pytest.fixture
def failures():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    image_failed.connect(receiver, weak=False)
    yield received
    image_failed.disconnect(receiver)


def upload(name: str = "cat.jpg", size=(64, 48)) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes(*size), content_type="image/jpeg")


# ---------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"bytes", "photos/cat.jpg", io.BytesIO(b"x"), None])
def test_not_a_file(publish, value):
    photo = Photo.objects.create()
    with pytest.raises(InvalidUpload) as info:
        save_image(value, photo)
    assert type(value).__name__ in str(info.value)
    assert isinstance(info.value, TypeError)
    assert ImageJob.objects.count() == 0


def test_not_a_model_instance(publish):
    with pytest.raises(InvalidUpload, match="model instance.*dict"):
        save_image(upload(), {"pk": 1})


def test_unsaved_instance(publish):
    with pytest.raises(ValueError) as info:
        save_image(upload(), Photo(title="new"))
    assert "tests.Photo" in str(info.value)
    assert "instance.save()" in str(info.value)
    assert "not saved yet" in str(info.value)


def test_instance_with_pk_but_not_saved(publish):
    with pytest.raises(ValueError, match="not saved yet"):
        save_image(upload(), Photo(pk=12345))


def test_two_file_fields_need_field_name(publish):
    document = Document.objects.create()
    with pytest.raises(ValueError) as info:
        save_image(upload(), document)
    assert "cover, attachment" in str(info.value)
    assert "field_name=" in str(info.value)


def test_no_file_fields(publish):
    note = Note.objects.create(text="hi")
    with pytest.raises(ValueError, match="tests.Note has no FileField or ImageField"):
        save_image(upload(), note)


def test_bad_field_name_lists_candidates(publish):
    document = Document.objects.create()
    with pytest.raises(ValueError) as info:
        save_image(upload(), document, "covr")
    assert "tests.Document.covr" in str(info.value)
    assert "cover, attachment" in str(info.value)


def test_non_file_field_name(publish):
    photo = Photo.objects.create()
    with pytest.raises(ValueError, match="file fields of tests.Photo: image"):
        save_image(upload(), photo, "title")
    note = Note.objects.create(text="x")
    with pytest.raises(ValueError, match="file fields of tests.Note: none"):
        save_image(upload(), note, "text")


@pytest.mark.parametrize("thumbnails", ["yes", 1, None, 0])
def test_thumbnails_must_be_bool(publish, thumbnails):
    with pytest.raises(TypeError, match="thumbnails"):
        save_image(upload(), Photo.objects.create(), thumbnails=thumbnails)


@pytest.mark.parametrize("queue", ["", 5, b"images"])
def test_bad_queue(publish, queue):
    with pytest.raises(TypeError, match="queue"):
        save_image(upload(), Photo.objects.create(), queue=queue)


@pytest.mark.parametrize("user", ["alice", 42, object()])
def test_user_must_be_a_user(publish, user):
    with pytest.raises(TypeError, match="user"):
        save_image(upload(), Photo.objects.create(), user=user)


def test_validation_errors_create_no_job_and_publish_nothing(
    publish, django_capture_on_commit_callbacks
):
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for kwargs in ({"thumbnails": "no"}, {"queue": ""}, {"user": "bob"}):
            with pytest.raises(TypeError):
                save_image(upload(), photo, **kwargs)
    assert callbacks == []
    assert ImageJob.objects.count() == 0
    assert publish.calls == []


def test_upload_too_large(settings, publish, django_capture_on_commit_callbacks):
    settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = 100
    photo = Photo.objects.create()
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(UploadTooLarge) as info,
    ):
        save_image(upload(), photo)
    assert info.value.limit == 100
    assert callbacks == []
    assert ImageJob.objects.count() == 0
    assert publish.calls == []


def test_misconfigured_staging_raises_before_any_job(settings, publish):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    settings.ASYNC_IMAGE_SAVE_STAGING = "nope"
    with pytest.raises(ImproperlyConfigured, match="ASYNC_IMAGE_SAVE_STAGING"):
        save_image(upload(), Photo.objects.create())
    assert ImageJob.objects.count() == 0
    assert publish.calls == []


# ---------------------------------------------------------------------------
# The job row and the message
# ---------------------------------------------------------------------------


def test_job_fields_for_authenticated_user(publish, django_capture_on_commit_callbacks):
    user = User.objects.create_user("alice", password="x")
    photo = Photo.objects.create()
    data = jpeg_bytes(64, 48)
    with django_capture_on_commit_callbacks() as callbacks:
        job = save_image(
            SimpleUploadedFile("..\\..\\c\tat.jpg", data, "image/jpeg"), photo, user=user
        )
    assert len(callbacks) == 1
    assert publish.calls == []  # captured, not run
    job = ImageJob.objects.get(pk=job.pk)
    assert job.state == ImageJob.State.PENDING
    assert job.owner == user
    assert job.size == len(data)
    assert job.sha256 == ""  # hashed after commit by the sending thread; the worker records it
    assert job.source_name == "cat.jpg"
    assert job.field_name == "image"
    assert job.object_id == str(photo.pk)
    assert job.content_type == ContentType.objects.get_for_model(Photo)
    assert job.codec == "msgpack"
    assert job.thumbnails is True
    assert job.staged_ref == ""
    assert job.task_id and job.task_id != job.id.hex
    assert job.error_code == "" and job.attempts == 0
    assert job.queue == ""


def test_job_owner_none_for_anonymous_user(publish):
    job = save_image(upload(), Photo.objects.create(), user=AnonymousUser())
    assert ImageJob.objects.get(pk=job.pk).owner is None


def test_job_owner_none_without_user(publish):
    job = save_image(upload(), Photo.objects.create())
    assert job.owner is None


def test_explicit_field_name_and_options(settings, publish, django_capture_on_commit_callbacks):
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "pickle"
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    document = Document.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), document, "cover", thumbnails=False, queue="images")
    assert (job.field_name, job.thumbnails, job.codec) == ("cover", False, "pickle")
    assert ImageJob.objects.get(pk=job.pk).queue == "images"
    [(message, body)] = publish.calls
    assert message == {
        "job_id": job.id.hex,
        "model": "tests.Document",
        "pk": str(document.pk),
        "field": "cover",
        "queue": "images",
        "thumbnails": False,
        "task_id": job.task_id,
    }
    decode(body).verify(None, job_id=job.id.hex)  # signed to this job


def test_queue_defaults_to_setting(settings, publish, django_capture_on_commit_callbacks):
    settings.ASYNC_IMAGE_SAVE_QUEUE = "img-queue"
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), Photo.objects.create())
    assert publish.calls[0][0]["queue"] == "img-queue"
    assert ImageJob.objects.get(pk=job.pk).queue == "img-queue"


def test_inline_message_carries_the_frame(publish, django_capture_on_commit_callbacks):
    data = jpeg_bytes(64, 48)
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(SimpleUploadedFile("cat.jpg", data, "image/jpeg"), photo)
    [(message, body)] = publish.calls
    assert isinstance(body, bytes)
    payload = decode(body)
    assert bytes(payload.data) == data
    assert payload.name == "cat.jpg"
    assert payload.sha256 == hashlib.sha256(data).hexdigest()
    payload.verify(None, job_id=job.id.hex)
    assert message["job_id"] == job.id.hex
    assert message["model"] == "tests.Photo"
    assert message["pk"] == str(photo.pk)
    assert message["field"] == "image"
    assert message["thumbnails"] is True


def test_large_upload_is_staged_in_redis(
    settings, publish, redis_service, django_capture_on_commit_callbacks
):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    settings.ASYNC_IMAGE_SAVE_STAGING = None  # per broker: Redis
    data = jpeg_bytes(64, 48)
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(SimpleUploadedFile("cat.jpg", data), Photo.objects.create())
    stager = get_stager()
    try:
        assert job.staged_ref == f"redis:{job.id.hex}"
        assert ImageJob.objects.get(pk=job.pk).staged_ref == job.staged_ref
        [(_, body)] = publish.calls
        assert body == job.staged_ref
        assert stager.client.exists(settings.ASYNC_IMAGE_SAVE_STAGING_PREFIX + job.id.hex) == 1
        assert bytes(decode(stager.get(job.id.hex)).data) == data
    finally:
        stager.delete(job.id.hex)


def test_large_upload_is_staged_in_directory(
    settings, publish, staging_dir, django_capture_on_commit_callbacks
):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    data = jpeg_bytes(64, 48)
    with django_capture_on_commit_callbacks() as callbacks:
        job = save_image(SimpleUploadedFile("cat.jpg", data), Photo.objects.create())
    assert job.staged_ref == f"directory:{job.id.hex}"
    assert not staging_dir.exists() or os.listdir(staging_dir) == []  # staged only at commit
    callbacks[0]()
    assert os.listdir(staging_dir) == [f"{job.id.hex}.payload"]
    assert publish.calls[0][1] == job.staged_ref
    assert bytes(decode((staging_dir / f"{job.id.hex}.payload").read_bytes()).data) == data


def test_small_upload_not_staged_even_with_directory_staging(settings, publish, staging_dir):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 1024 * 1024
    job = save_image(upload(), Photo.objects.create())
    assert job.staged_ref == ""


def test_plain_file_upload_is_accepted(publish):
    job = save_image(
        File(io.BytesIO(b"not checked here"), name="../../x/notes.bin"), Photo.objects.create()
    )
    assert job.source_name == "notes.bin"
    assert job.size == len(b"not checked here")


# ---------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_publish_waits_for_commit(publish):
    photo = Photo.objects.create()
    with transaction.atomic():
        job = save_image(upload(), photo)
        assert publish.calls == []
    assert len(publish.calls) == 1
    assert publish.calls[0][0]["job_id"] == job.id.hex


@pytest.mark.django_db(transaction=True)
def test_publish_never_on_rollback(publish):
    photo = Photo.objects.create()
    job_ids = []

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        job_ids.append(save_image(upload(), photo).pk)
        raise Boom
    assert publish.calls == []
    assert not ImageJob.objects.filter(pk=job_ids[0]).exists()


@pytest.mark.django_db(transaction=True)
def test_publish_at_once_outside_transaction(publish):
    job = save_image(upload(), Photo.objects.create())
    assert [m["job_id"] for m, _ in publish.calls] == [job.id.hex]


@pytest.mark.django_db(transaction=True)
def test_publish_failure_outside_transaction_updates_returned_job(monkeypatch):
    monkeypatch.setattr(
        "async_image_save.tasks.publish", PublishRecorder(error=ConnectionError("x"))
    )
    job = save_image(upload(), Photo.objects.create())
    assert (job.state, job.error_code) == ("failed", "broker_unreachable")
    assert ImageJob.objects.get(pk=job.pk).state == "failed"


def test_rolled_back_savepoint_drops_callback(publish, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                save_image(upload(), photo)
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
    assert callbacks == []
    assert publish.calls == []
    assert ImageJob.objects.count() == 0


# ---------------------------------------------------------------------------
# Broker failures
# ---------------------------------------------------------------------------


def test_publish_error_fails_job_and_keeps_staged_payload_for_retry(
    settings, monkeypatch, staging_dir, failures, django_capture_on_commit_callbacks
):
    recorder = PublishRecorder(error=ConnectionError("connection refused"))
    monkeypatch.setattr("async_image_save.tasks.publish", recorder)
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), Photo.objects.create())
    assert len(recorder.calls) == 1
    assert recorder.calls[0][1] == f"directory:{job.id.hex}"
    job.refresh_from_db()
    assert job.state == ImageJob.State.FAILED
    assert job.error_code == "broker_unreachable"
    assert "ConnectionError" in job.error
    # Kept on purpose (dispatching.dispatch): the admin's Retry and the recover command re-send it.
    assert os.listdir(staging_dir) == [f"{job.id.hex}.payload"]
    decode((staging_dir / f"{job.id.hex}.payload").read_bytes()).verify(None, job_id=job.id.hex)
    assert [f["code"] for f in failures] == ["broker_unreachable"]


def test_publish_error_inline_fails_job(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("async_image_save.tasks.publish", PublishRecorder(error=OSError("down")))
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), Photo.objects.create())
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("failed", "broker_unreachable")


def test_staging_error_fails_job_without_publishing(
    settings, publish, tmp_path, django_capture_on_commit_callbacks
):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the staging directory should be")
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(blocker)
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), Photo.objects.create())
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("failed", "broker_unreachable")
    assert publish.calls == []


@pytest.fixture
def closed_broker(monkeypatch):
    """Point the test Celery app at a closed port, with fresh connection pools."""
    from tests.celery_app import app

    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None)
    monkeypatch.setattr(app.amqp, "_producer_pool", None)
    yield app
    for pool in (app.amqp._producer_pool, app._pool):
        if pool is not None:
            pool.force_close_all()


def test_real_publish_to_closed_port_fails_job(
    closed_broker, failures, django_capture_on_commit_callbacks
):
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(upload(), photo)
    job.refresh_from_db()
    assert job.state == ImageJob.State.FAILED
    assert job.error_code == "broker_unreachable"
    assert "OperationalError" in job.error, job.error
    assert "127.0.0.1:1" in job.error  # it really tried the closed port
    assert len(failures) == 1


def test_returns_pending_job_with_uuid(publish):
    job = save_image(upload(), Photo.objects.create())
    assert isinstance(job.id, uuid.UUID)
    assert job.state == ImageJob.State.PENDING
    assert job.is_finished is False


# ---------------------------------------------------------------------------
# Sent on the committing thread (this module's setting): no thread at all
# ---------------------------------------------------------------------------


def big_jpeg() -> bytes:
    """A real JPEG of about 512 KiB."""
    return sized_jpeg(512 * 1024)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("inline_max", [0, 8 * 1024 * 1024], ids=["staged", "inline"])
def test_sending_on_the_committing_thread_uses_no_thread(
    settings, publish, staging_dir, monkeypatch, inline_max
):
    from async_image_save import background

    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = inline_max
    handed_off = []
    monkeypatch.setattr(background, "submit", lambda *args, **kw: handed_off.append(args))
    data = big_jpeg()
    job = save_image(SimpleUploadedFile("big.jpg", data, "image/jpeg"), Photo.objects.create())
    assert handed_off == []  # for servers where application threads never run
    [(_, body)] = publish.calls
    if inline_max:
        assert job.staged_ref == ""
        frame = decode(body)
    else:
        assert body == job.staged_ref
        frame = decode((staging_dir / f"{job.id.hex}.payload").read_bytes())
    assert bytes(frame.data) == data
    assert frame.sha256 == hashlib.sha256(data).hexdigest()  # hashed by the send
    frame.verify(None, job_id=job.id.hex)


@pytest.mark.django_db(transaction=True)
def test_large_upload_inside_transaction_is_staged_only_at_commit(settings, publish, staging_dir):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    data = big_jpeg()
    with transaction.atomic():
        job = save_image(SimpleUploadedFile("big.jpg", data), Photo.objects.create())
        assert not staging_dir.exists() or os.listdir(staging_dir) == []
    staged = decode((staging_dir / f"{job.id.hex}.payload").read_bytes())
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    staged.verify(None, job_id=job.id.hex)


@pytest.mark.django_db(transaction=True)
def test_failed_job_insert_stages_and_sends_nothing(settings, publish, staging_dir, monkeypatch):
    from django.db import DatabaseError

    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0

    def refuse(*args, **kwargs):
        raise DatabaseError("the database went away")

    monkeypatch.setattr("async_image_save.saving._create_job", refuse)
    with pytest.raises(DatabaseError, match="went away"):
        save_image(SimpleUploadedFile("big.jpg", big_jpeg()), Photo.objects.create())
    assert not staging_dir.exists() or os.listdir(staging_dir) == []
    assert publish.calls == []
    assert ImageJob.objects.count() == 0
