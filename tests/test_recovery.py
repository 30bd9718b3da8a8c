"""recovery.py called directly: payload_available, retry_job, recover_stale."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from async_image_save import tasks
from async_image_save.models import ImageJob
from async_image_save.recovery import payload_available, recover_stale, retry_job, stale_jobs
from async_image_save.signals import image_failed
from async_image_save.staging import get_stager
from tests.models import Photo

pytestmark = pytest.mark.django_db
State = ImageJob.State


def make_job(**fields) -> ImageJob:
    photo = Photo.objects.create()
    values = {
        "content_type": ContentType.objects.get_for_model(Photo),
        "object_id": str(photo.pk),
        "field_name": "image",
        "source_name": "r.jpg",
        "size": 10,
        "sha256": "0" * 64,
        "task_id": str(uuid.uuid4()),
        **fields,
    }
    return ImageJob.objects.create(**values)


def age(job: ImageJob, minutes: float, *, created_minutes: float | None = None) -> None:
    now = timezone.now()
    fields = {"updated_at": now - timedelta(minutes=minutes)}
    if created_minutes is not None:
        fields["created_at"] = now - timedelta(minutes=created_minutes)
    ImageJob.objects.filter(pk=job.pk).update(**fields)


def state_of(job: ImageJob) -> tuple[str, str, str]:
    return ImageJob.objects.values_list("state", "error_code", "error").get(pk=job.pk)


@pytest.fixture
def directory(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    return get_stager("directory")


def staged_job(stager, **fields) -> ImageJob:
    job_id = uuid.uuid4()
    stager.put(job_id.hex, b"payload bytes")
    return make_job(id=job_id, staged_ref=stager.ref(job_id.hex), **fields)


@pytest.fixture
def published(monkeypatch):
    sent = {"publish": [], "thumbnails": []}
    monkeypatch.setattr(
        tasks, "publish", lambda message, body: sent["publish"].append((message, body))
    )
    monkeypatch.setattr(
        tasks,
        "publish_thumbnails",
        lambda job_id, queue: sent["thumbnails"].append((job_id, queue)),
    )
    return sent


@pytest.fixture
def failures():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    image_failed.connect(receiver, weak=False)
    yield received
    image_failed.disconnect(receiver)


# ---------------------------------------------------------------------------
# payload_available
# ---------------------------------------------------------------------------


def test_inline_payload_is_never_available():
    assert payload_available(make_job(staged_ref="")) is False


def test_staged_directory_payload_is_available_until_removed(directory):
    job = staged_job(directory)
    assert payload_available(job) is True
    directory.delete(job.pk.hex)
    assert payload_available(job) is False


def test_staged_redis_payload_is_available_until_it_expires(redis_service):
    stager = get_stager("redis")
    job = staged_job(stager)
    try:
        assert payload_available(job) is True
        stager.client.pexpire(stager.prefix + job.pk.hex, 1)  # expire it now
        time.sleep(0.05)
        assert payload_available(job) is False
    finally:
        stager.delete(job.pk.hex)


def test_malformed_reference_is_not_available(caplog):
    job = make_job(staged_ref="directory:../../etc/passwd")
    assert payload_available(job) is False
    assert "could not check staged payload" in caplog.text


def test_unreachable_staging_store_counts_as_unavailable(settings):
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = "redis://127.0.0.1:1/0"
    job = make_job(staged_ref=f"redis:{uuid.uuid4().hex}")
    assert payload_available(job) is False


# ---------------------------------------------------------------------------
# retry_job
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.PENDING, State.SAVED, State.DONE])
def test_retry_skips_unfinished_and_done_jobs(state, published):
    job = make_job(state=state, saved_name="photos/a.jpg")
    result = retry_job(job)
    assert (result.action, result.reason) == ("skipped", f"the job is {state}, not failed")
    assert state_of(job)[0] == state
    assert published == {"publish": [], "thumbnails": []}


def test_retry_saved_file_requeues_thumbnails(published):
    job = make_job(
        state=State.FAILED,
        error_code="thumbnail_error",
        error="boom",
        saved_name="photos/a.jpg",
        queue="images-q",
    )
    result = retry_job(job)
    assert result.action == "thumbnails_requeued"
    assert result.job is job
    assert state_of(job) == ("saved", "", "")
    assert published["thumbnails"] == [(job.pk.hex, "images-q")]
    assert published["publish"] == []


def test_retry_saved_file_without_queue_uses_default(published):
    job = make_job(state=State.FAILED, error_code="thumbnail_error", saved_name="photos/a.jpg")
    retry_job(job)
    assert published["thumbnails"] == [(job.pk.hex, None)]


def test_retry_staged_payload_requeues_the_whole_job(directory, published):
    job = staged_job(directory, state=State.FAILED, error_code="storage_error", error="disk")
    result = retry_job(job)
    assert (result.action, result.reason) == ("requeued", "the staged payload is sent again")
    assert state_of(job) == ("pending", "", "")
    [(message, body)] = published["publish"]
    assert body == job.staged_ref
    assert message == {
        "job_id": job.pk.hex,
        "model": "tests.Photo",
        "pk": job.object_id,
        "field": "image",
        "queue": None,
        "thumbnails": True,
        "task_id": job.task_id,
    }


def test_retry_inline_payload_is_skipped(published):
    job = make_job(state=State.FAILED, error_code="storage_error", error="x")
    result = retry_job(job)
    assert result.action == "skipped"
    assert "bytes are gone" in result.reason
    assert state_of(job) == ("failed", "storage_error", "x")
    assert published == {"publish": [], "thumbnails": []}


def test_retry_expired_staged_payload_is_skipped(directory, published):
    job = staged_job(directory, state=State.FAILED, error_code="storage_error")
    directory.delete(job.pk.hex)
    assert retry_job(job).action == "skipped"
    assert state_of(job)[0] == "failed"
    assert published["publish"] == []


def test_retry_dry_run_changes_and_sends_nothing(directory, published):
    saved = make_job(state=State.FAILED, error_code="thumbnail_error", saved_name="photos/a.jpg")
    staged = staged_job(directory, state=State.FAILED, error_code="storage_error")
    assert retry_job(saved, dry_run=True).action == "thumbnails_requeued"
    assert retry_job(staged, dry_run=True).action == "requeued"
    assert state_of(saved) == ("failed", "thumbnail_error", "")
    assert state_of(staged) == ("failed", "storage_error", "")
    assert published == {"publish": [], "thumbnails": []}


def test_retry_of_a_stale_object_whose_row_moved_on_sends_nothing(published):
    job = make_job(state=State.FAILED, error_code="thumbnail_error", saved_name="photos/a.jpg")
    ImageJob.objects.filter(pk=job.pk).update(state=State.DONE)  # someone else retried it
    retry_job(job)  # ``job`` still says failed
    assert state_of(job)[0] == "done"
    assert published["thumbnails"] == []


def test_retry_twice_sends_once(published):
    job = make_job(state=State.FAILED, error_code="thumbnail_error", saved_name="photos/a.jpg")
    retry_job(job)
    retry_job(ImageJob.objects.get(pk=job.pk))
    assert len(published["thumbnails"]) == 1


# ---------------------------------------------------------------------------
# stale_jobs / recover_stale
# ---------------------------------------------------------------------------


def test_stale_jobs_are_unfinished_and_old_enough():
    old_pending = make_job(source_name="old-pending.jpg")
    old_saved = make_job(source_name="old-saved.jpg", state=State.SAVED)
    fresh = make_job(source_name="fresh.jpg")
    old_done = make_job(source_name="old-done.jpg", state=State.DONE)
    old_failed = make_job(source_name="old-failed.jpg", state=State.FAILED)
    age(old_pending, 20, created_minutes=20)
    age(old_saved, 20, created_minutes=30)
    age(fresh, 5)
    for job in (old_done, old_failed):
        age(job, 60)
    assert list(stale_jobs(timedelta(minutes=15))) == [old_saved, old_pending]  # oldest first
    assert set(stale_jobs(timedelta(minutes=1))) == {old_saved, old_pending, fresh}


def test_recover_stale_handles_each_kind(directory, published, failures):
    saved = make_job(source_name="saved.jpg", state=State.SAVED, saved_name="photos/s.jpg")
    staged = staged_job(directory, source_name="staged.jpg")
    inline = make_job(source_name="inline.jpg")
    fresh = make_job(source_name="fresh.jpg")
    for minutes, job in ((40, saved), (30, staged), (20, inline)):
        age(job, minutes, created_minutes=minutes)

    actions = recover_stale(timedelta(minutes=15))

    assert [(a.job.pk, a.action) for a in actions] == [
        (saved.pk, "thumbnails_requeued"),
        (staged.pk, "requeued"),
        (inline.pk, "failed"),
    ]
    assert published["thumbnails"] == [(saved.pk.hex, None)]
    assert [(m["job_id"], body) for m, body in published["publish"]] == [
        (staged.pk.hex, staged.staged_ref)
    ]
    assert state_of(saved)[0] == "saved"
    assert state_of(staged)[0] == "pending"
    assert state_of(fresh)[0] == "pending"
    state, code, error = state_of(inline)
    assert (state, code) == ("failed", "message_lost")
    assert "0:15:00" in error
    assert [(f["job"].pk, f["code"]) for f in failures] == [(inline.pk, "message_lost")]


def test_recover_stale_dry_run(directory, published, failures):
    inline = make_job(source_name="inline.jpg")
    staged = staged_job(directory)
    for job in (inline, staged):
        age(job, 30)
    actions = recover_stale(timedelta(minutes=15), dry_run=True)
    assert sorted(a.action for a in actions) == ["failed", "requeued"]
    assert state_of(inline)[0] == "pending"
    assert state_of(staged)[0] == "pending"
    assert published == {"publish": [], "thumbnails": []}
    assert failures == []


def test_recover_stale_with_nothing_stale():
    make_job()
    assert recover_stale(timedelta(minutes=15)) == []
