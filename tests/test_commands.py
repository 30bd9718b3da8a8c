"""Management commands: async_image_save_status, async_image_save_recover, regenerate_thumbnails."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from async_image_save import save_image, tasks
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.testing import make_image_file, run_jobs_eagerly
from async_image_save.thumbnails import thumbnail
from tests.conftest import wait_for_job
from tests.models import Document, Photo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("send_on_commit_thread")]
State = ImageJob.State


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def make_job(photo=None, **fields) -> ImageJob:
    photo = photo or Photo.objects.create()
    values = {
        "content_type": ContentType.objects.get_for_model(Photo),
        "object_id": str(photo.pk),
        "field_name": "image",
        "source_name": "c.jpg",
        "size": 10,
        "sha256": "0" * 64,
        **fields,
    }
    return ImageJob.objects.create(**values)


def age(job: ImageJob, minutes: float, *, created: bool = False) -> None:
    """Make ``job`` look untouched for ``minutes``."""
    when = timezone.now() - timedelta(minutes=minutes)
    fields = {"updated_at": when}
    if created:
        fields["created_at"] = when
    ImageJob.objects.filter(pk=job.pk).update(**fields)


def photo_with_image(name: str = "cmd.jpg", size=(400, 300)) -> Photo:
    photo = Photo.objects.create()
    photo.image.save(name, ContentFile(make_image_file(name, size=size).read()), save=True)
    return photo


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.fixture
def directory_staging(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    return settings.ASYNC_IMAGE_SAVE_STAGING_DIR


@pytest.fixture
def published(monkeypatch):
    """Record what would be sent to the broker instead of sending it."""
    sent = {"publish": [], "thumbnails": []}
    monkeypatch.setattr(tasks, "publish", lambda message, body: sent["publish"].append(message))
    monkeypatch.setattr(
        tasks, "publish_thumbnails", lambda job_id, queue: sent["thumbnails"].append(job_id)
    )
    return sent


def lost_message_job(photo: Photo, capture, name: str = "lost.jpg", size=(400, 300)) -> ImageJob:
    """A job whose payload was staged at commit but whose message never reached a worker."""
    original = tasks.publish
    tasks.publish = lambda message, body: None  # the broker "loses" it
    try:
        with capture(execute=True):
            job = save_image(make_image_file(name, size=size), photo)
    finally:
        tasks.publish = original
    return job


# ---------------------------------------------------------------------------
# async_image_save_status
# ---------------------------------------------------------------------------


def test_status_counts_each_state_and_names_the_oldest_pending():
    make_job(source_name="new-pending.jpg")
    oldest = make_job(source_name="old-pending.jpg")
    age(oldest, 10, created=True)
    make_job(source_name="d1.jpg", state=State.DONE)
    make_job(source_name="d2.jpg", state=State.DONE)
    make_job(source_name="f.jpg", state=State.FAILED)
    out = run("async_image_save_status")
    lines = out.splitlines()
    assert lines[:4] == [" pending: 2", "   saved: 0", "    done: 2", "  failed: 1"]
    match = re.fullmatch(
        rf"oldest pending: {oldest.pk} \(old-pending\.jpg\), waiting (\d+)s", lines[4]
    )
    assert match, lines[4]
    assert 595 <= int(match.group(1)) <= 700


def test_status_without_pending_jobs():
    make_job(state=State.DONE)
    out = run("async_image_save_status")
    assert "    done: 1" in out.splitlines()
    assert out.splitlines()[-1] == "no pending job"


def test_status_on_an_empty_table():
    assert run("async_image_save_status").splitlines() == [
        " pending: 0",
        "   saved: 0",
        "    done: 0",
        "  failed: 0",
        "no pending job",
    ]


# ---------------------------------------------------------------------------
# async_image_save_recover
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["15", "abc", "15x", "-5m", "1.5h", ""])
def test_recover_rejects_a_bad_duration(value):
    with pytest.raises(CommandError) as excinfo:
        run("async_image_save_recover", older_than=value)
    message = str(excinfo.value)
    assert "is not a duration" in message
    assert "s, m, h or d" in message
    assert "15m" in message


@pytest.mark.parametrize("value", ["90s", "15m", "2h", "7d", " 3 m "])
def test_recover_accepts_good_durations(value):
    assert run("async_image_save_recover", older_than=value).strip() == "0 job(s) handled."


def test_recover_leaves_fresh_jobs_alone(published):
    fresh = make_job()
    age(make_job(state=State.DONE), 60)
    out = run("async_image_save_recover", older_than="15m")
    assert out.strip() == "0 job(s) handled."
    fresh.refresh_from_db()
    assert fresh.state == "pending"
    assert published == {"publish": [], "thumbnails": []}


def test_recover_fails_a_stale_inline_job_with_message_lost(published):
    stale = make_job(source_name="inline.jpg")
    age(stale, 30)
    out = run("async_image_save_recover", older_than="15m")
    stale.refresh_from_db()
    assert (stale.state, stale.error_code) == ("failed", "message_lost")
    assert "upload it again" in stale.error
    assert f"failed: {stale.pk} (inline.jpg):" in out
    assert out.splitlines()[-1] == "1 job(s) handled."
    assert published["publish"] == []


def test_recover_dry_run_changes_nothing(published):
    stale = make_job(source_name="inline.jpg")
    saved = make_job(source_name="saved.jpg", state=State.SAVED, saved_name="photos/s.jpg")
    failed = make_job(
        source_name="f.jpg", state=State.FAILED, saved_name="photos/f.jpg", error_code="x"
    )
    for job in (stale, saved):
        age(job, 30)
    before = {j.pk: (j.state, j.error_code) for j in ImageJob.objects.all()}
    out = run("async_image_save_recover", older_than="15m", dry_run=True, retry_failed=True)
    after = {j.pk: (j.state, j.error_code) for j in ImageJob.objects.all()}
    assert after == before
    assert published == {"publish": [], "thumbnails": []}
    assert f"[dry run] failed: {stale.pk}" in out
    assert f"[dry run] thumbnails_requeued: {saved.pk}" in out
    assert f"[dry run] thumbnails_requeued: {failed.pk}" in out
    assert out.splitlines()[-1] == "[dry run] 3 job(s) handled."


def test_recover_resends_a_stale_staged_job(
    media, directory_staging, django_capture_on_commit_callbacks
):
    photo = Photo.objects.create()
    job = lost_message_job(photo, django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert job.staged_ref == f"directory:{job.pk.hex}"
    assert os.path.exists(os.path.join(directory_staging, f"{job.pk.hex}.payload"))
    assert job.state == "pending"
    age(job, 30)

    with run_jobs_eagerly():
        out = run("async_image_save_recover", older_than="15m")
    assert f"requeued: {job.pk} (lost.jpg): its staged payload is sent again" in out
    job.refresh_from_db()
    assert job.state == "done", (job.error_code, job.error)
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert not os.path.exists(os.path.join(directory_staging, f"{job.pk.hex}.payload"))


def test_recover_publishes_the_stale_staged_job_message(
    media, directory_staging, django_capture_on_commit_callbacks, published
):
    photo = Photo.objects.create()
    job = lost_message_job(photo, django_capture_on_commit_callbacks)
    age(job, 30)
    run("async_image_save_recover", older_than="15m")
    assert published["publish"] == [
        {
            "job_id": job.pk.hex,
            "model": "tests.Photo",
            "pk": str(photo.pk),
            "field": "image",
            "queue": None,
            "thumbnails": True,
            "task_id": job.task_id,
        }
    ]
    job.refresh_from_db()
    assert job.state == "pending"


def test_recover_fails_a_stale_job_whose_staged_payload_expired(
    media, directory_staging, django_capture_on_commit_callbacks, published
):
    job = lost_message_job(Photo.objects.create(), django_capture_on_commit_callbacks)
    os.remove(os.path.join(directory_staging, f"{job.pk.hex}.payload"))
    age(job, 30)
    run("async_image_save_recover", older_than="15m")
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("failed", "message_lost")
    assert published["publish"] == []


def test_recover_resends_thumbnails_of_a_stale_saved_job(media, published):
    photo = photo_with_image()
    job = make_job(photo, state=State.SAVED, attempts=1, saved_name=photo.image.name)
    age(job, 30)
    out = run("async_image_save_recover", older_than="15m")
    assert published["thumbnails"] == [job.pk.hex]
    assert f"thumbnails_requeued: {job.pk}" in out
    job.refresh_from_db()
    assert job.state == "saved"


def test_recover_retry_failed(
    media, directory_staging, django_capture_on_commit_callbacks, published
):
    photo = photo_with_image()
    thumbs_failed = make_job(
        photo,
        source_name="t.jpg",
        state=State.FAILED,
        error_code="thumbnail_error",
        saved_name=photo.image.name,
    )
    staged = lost_message_job(Photo.objects.create(), django_capture_on_commit_callbacks)
    ImageJob.objects.filter(pk=staged.pk).update(state=State.FAILED, error_code="storage_error")
    inline = make_job(source_name="gone.jpg", state=State.FAILED, error_code="storage_error")

    without = run("async_image_save_recover", older_than="15m")
    assert without.strip() == "0 job(s) handled."
    assert ImageJob.objects.filter(state=State.FAILED).count() == 3

    out = run("async_image_save_recover", older_than="15m", retry_failed=True)
    assert out.splitlines()[-1] == "2 job(s) handled."
    assert f"thumbnails_requeued: {thumbs_failed.pk}" in out
    assert f"requeued: {staged.pk}" in out
    assert str(inline.pk) not in out
    states = dict(ImageJob.objects.values_list("pk", "state"))
    assert states == {thumbs_failed.pk: "saved", staged.pk: "pending", inline.pk: "failed"}
    assert published["thumbnails"] == [thumbs_failed.pk.hex]
    assert [m["job_id"] for m in published["publish"]] == [staged.pk.hex]


def test_recover_retry_failed_eagerly_ends_done(
    media, directory_staging, django_capture_on_commit_callbacks
):
    photo = Photo.objects.create()
    job = lost_message_job(photo, django_capture_on_commit_callbacks)
    ImageJob.objects.filter(pk=job.pk).update(state=State.FAILED, error_code="storage_error")
    with run_jobs_eagerly():
        run("async_image_save_recover", retry_failed=True)
    job.refresh_from_db()
    assert (job.state, job.error_code, job.error) == ("done", "", "")
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name


# ---------------------------------------------------------------------------
# regenerate_thumbnails
# ---------------------------------------------------------------------------


def test_regenerate_sync_creates_thumbnail_rows(media):
    photo = photo_with_image("regen.jpg", size=(400, 300))
    Photo.objects.create()  # no image: skipped
    assert not Thumbnail.objects.exists()
    out = run("regenerate_thumbnails", "tests.Photo.image", sync=True)
    assert "1 image(s) regenerated." in out
    sizes = {
        t.spec: (t.width, t.height) for t in Thumbnail.objects.filter(source_name=photo.image.name)
    }
    assert sizes == {"small": (200, 150), "medium": (400, 300)}
    assert thumbnail(photo.image, "small")


def test_regenerate_sync_over_all_image_fields(media):
    photo = photo_with_image("all.jpg")
    document = Document.objects.create()
    document.cover.save("cover.jpg", ContentFile(make_image_file().read()), save=True)
    out = run("regenerate_thumbnails", sync=True)
    assert "2 image(s) regenerated." in out
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2
    assert Thumbnail.objects.filter(source_name=document.cover.name).count() == 2


def test_regenerate_missing_only_skips_complete_objects(media):
    complete = photo_with_image("complete.jpg")
    partial = photo_with_image("partial.jpg")
    run("regenerate_thumbnails", "tests.Photo.image", sync=True)
    Thumbnail.objects.filter(source_name=partial.image.name, spec="medium").delete()
    complete_rows = {
        t.pk: t.created_at for t in Thumbnail.objects.filter(source_name=complete.image.name)
    }

    out = run("regenerate_thumbnails", "tests.Photo.image", sync=True, missing_only=True)
    assert "1 image(s) regenerated." in out
    assert {
        t.pk: t.created_at for t in Thumbnail.objects.filter(source_name=complete.image.name)
    } == complete_rows
    assert Thumbnail.objects.filter(source_name=partial.image.name).count() == 2


def test_regenerate_missing_only_redoes_thumbnails_of_a_changed_spec(media, settings):
    """Regression: rows of an outdated spec (other spec_hash) do not count as complete."""
    photo = photo_with_image("spec.jpg", size=(400, 300))
    run("regenerate_thumbnails", "tests.Photo.image", sync=True)
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {
        "small": {"size": (100, 100)},
        "medium": {"size": (800, 800)},
    }
    assert not thumbnail(photo.image, "small")  # the new spec has no output yet
    run("regenerate_thumbnails", "tests.Photo.image", sync=True, missing_only=True)
    small = thumbnail(photo.image, "small")
    assert small
    assert (small.width, small.height) == (100, 75)


def test_regenerate_sync_goes_on_after_a_missing_file(media):
    """Regression: one file gone from the storage stopped the whole run with a traceback."""
    missing = Photo.objects.create(image="photos/missing.jpg")
    later = photo_with_image("later.jpg")
    out, err = StringIO(), StringIO()
    call_command("regenerate_thumbnails", "tests.Photo.image", sync=True, stdout=out, stderr=err)
    assert Thumbnail.objects.filter(source_name=later.image.name).count() == 2
    assert f"tests.Photo {missing.pk}: FileNotFoundError" in err.getvalue()
    assert "1 image(s) regenerated." in out.getvalue()
    assert "1 image(s) could not be read" in out.getvalue()


def test_regenerate_without_sync_queues_tasks(media, monkeypatch):
    sent = []
    monkeypatch.setattr(
        tasks.regenerate_thumbnails,
        "apply_async",
        lambda args, **options: sent.append((args, options)),
    )
    photo = photo_with_image("queued.jpg")
    out = run("regenerate_thumbnails", "tests.Photo.image")
    assert sent == [(("tests.Photo", str(photo.pk), "image", None), {"serializer": "msgpack"})]
    assert "1 image(s) queued." in out
    assert not Thumbnail.objects.exists()


@pytest.mark.parametrize(
    "target",
    [
        "nonsense",
        "tests.Photo",
        "a.b.c.d",
        "nosuchapp.Photo.image",
        "tests.NoSuchModel.image",
        "tests.Photo.title",
    ],
)
def test_regenerate_bad_target(target):
    with pytest.raises(CommandError) as excinfo:
        run("regenerate_thumbnails", target)
    assert target in str(excinfo.value)


def test_regenerate_unknown_field_is_a_command_error():
    """Regression: FieldDoesNotExist is not a LookupError; it must become a CommandError."""
    with pytest.raises(CommandError, match="tests.Photo.nosuchfield"):
        run("regenerate_thumbnails", "tests.Photo.nosuchfield")


# ---------------------------------------------------------------------------
# end to end through the real worker
# ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_recover_resends_thumbnails_of_a_stale_saved_job(celery_worker):
    photo = photo_with_image("e2e-stale.jpg", size=(300, 200))
    job = make_job(photo, state=State.SAVED, attempts=1, saved_name=photo.image.name)
    age(job, 30)
    out = run("async_image_save_recover", older_than="15m")
    assert f"thumbnails_requeued: {job.pk}" in out
    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    assert {
        t.spec: (t.width, t.height) for t in Thumbnail.objects.filter(source_name=photo.image.name)
    } == {"small": (200, 133), "medium": (300, 200)}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_recover_resends_a_stale_staged_job(celery_worker, settings, monkeypatch):
    # Directory staging in the worker's own staging dir (tests/settings.py), all payloads staged.
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    monkeypatch.setattr(tasks, "publish", lambda message, body: None)  # the message is lost
    photo = Photo.objects.create()
    upload = make_image_file("e2e-lost.jpg", size=(300, 200))
    data = upload.read()
    job = save_image(upload, photo)
    assert job.staged_ref.startswith("directory:")
    monkeypatch.undo()
    age(job, 30)
    assert ImageJob.objects.get(pk=job.pk).state == "pending"
    out = run("async_image_save_recover", older_than="15m")
    assert f"requeued: {job.pk}" in out
    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo.refresh_from_db()
    with photo.image.open("rb") as fh:
        assert fh.read() == data
