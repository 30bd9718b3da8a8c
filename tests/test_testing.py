"""async_image_save.testing: the helpers a project uses to test its own upload views."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import unittest

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from async_image_save import save_image, tasks, wait_for_publishes
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.testing import (
    ImageJobTestMixin,
    make_image_file,
    run_jobs_eagerly,
    wait_for_job,
)
from tests.conftest import ROOT
from tests.models import Photo

State = ImageJob.State


def opened(upload: SimpleUploadedFile) -> Image.Image:
    upload.seek(0)
    image = Image.open(io.BytesIO(upload.read()))
    image.load()
    return image


# ---------------------------------------------------------------------------
# make_image_file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "content_type"),
    [
        ("a.jpg", "JPEG", "image/jpeg"),
        ("a.JPEG", "JPEG", "image/jpeg"),
        ("a.png", "PNG", "image/png"),
        ("a.gif", "GIF", "image/gif"),
        ("a.webp", "WEBP", "image/webp"),
        ("noextension", "JPEG", "image/jpeg"),
    ],
)
def test_make_image_file_format_from_the_extension(name, fmt, content_type):
    upload = make_image_file(name, size=(31, 17))
    image = opened(upload)
    assert (image.format, image.size) == (fmt, (31, 17))
    assert upload.name == name
    assert upload.content_type == content_type
    upload.seek(0)
    assert upload.size == len(upload.read()) > 0


def test_make_image_file_explicit_format_wins():
    upload = make_image_file("weird.jpg", size=(5, 6), image_format="PNG")
    image = opened(upload)
    assert (image.format, image.size) == ("PNG", (5, 6))
    assert upload.content_type == "image/png"


def test_make_image_file_defaults_and_colour():
    upload = make_image_file(color=(0, 0, 255), image_format="PNG")
    image = opened(upload)
    assert upload.name == "test.jpg"
    assert image.size == (64, 48)
    assert image.convert("RGB").getpixel((10, 10)) == (0, 0, 255)


def test_make_image_file_is_readable_from_the_start():
    upload = make_image_file("x.png")
    assert upload.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# run_jobs_eagerly
# ---------------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.mark.django_db
def test_run_jobs_eagerly_runs_a_job_to_done_inside_the_block(
    media, django_capture_on_commit_callbacks
):
    original = tasks.publish
    photo = Photo.objects.create()
    with run_jobs_eagerly():
        assert tasks.publish is not original
        with django_capture_on_commit_callbacks(execute=True):
            job = save_image(make_image_file("eager.jpg", size=(400, 300)), photo)
        job.refresh_from_db()
        assert job.state == State.DONE  # already, inside the block
    assert tasks.publish is original
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2


@pytest.mark.django_db
def test_run_jobs_eagerly_without_thumbnails_ends_done(media, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), photo, thumbnails=False)
    job.refresh_from_db()
    assert job.state == State.DONE
    assert not Thumbnail.objects.exists()


@pytest.mark.django_db
def test_run_jobs_eagerly_reports_a_bad_upload_as_failed(media, django_capture_on_commit_callbacks):
    photo = Photo.objects.create()
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        job = save_image(SimpleUploadedFile("x.jpg", b"text", "image/jpeg"), photo)
    job.refresh_from_db()
    assert (job.state, job.error_code) == ("failed", "not_an_image")


def test_run_jobs_eagerly_restores_publish_after_an_error():
    original = tasks.publish
    with pytest.raises(RuntimeError), run_jobs_eagerly():
        assert tasks.publish is not original
        raise RuntimeError("test body failed")
    assert tasks.publish is original


def test_run_jobs_eagerly_nests():
    original = tasks.publish
    with run_jobs_eagerly():
        eager = tasks.publish
        with run_jobs_eagerly():
            assert tasks.publish is eager
        assert tasks.publish is eager
    assert tasks.publish is original


@pytest.mark.django_db
def test_outside_the_block_nothing_runs_in_process(
    media, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(tasks, "publish", lambda message, body: sent.append(message["job_id"]))
    with run_jobs_eagerly():
        pass
    photo = Photo.objects.create()
    with django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file(), photo)
    assert wait_for_publishes()  # sent from the background pool, as by default
    assert sent == [job.pk.hex]
    job.refresh_from_db()
    assert job.state == State.PENDING


@pytest.mark.django_db
def test_run_jobs_eagerly_also_runs_retried_thumbnail_jobs(media, monkeypatch):
    """Regression: only tasks.publish was patched; thumbnail retries went to the broker."""
    from django.core.files.base import ContentFile

    from async_image_save.recovery import retry_job

    sent = []
    monkeypatch.setattr(tasks.make_thumbnails, "apply_async", lambda *a, **kw: sent.append((a, kw)))
    photo = Photo.objects.create()
    photo.image.save("r.jpg", ContentFile(make_image_file(size=(300, 200)).read()), save=True)
    job = ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="r.jpg",
        size=1,
        sha256="0" * 64,
        state=State.FAILED,
        error_code="thumbnail_error",
        saved_name=photo.image.name,
    )
    with run_jobs_eagerly():
        retry_job(job)
    job.refresh_from_db()
    assert sent == []  # nothing went to the broker
    assert job.state == State.DONE


# ---------------------------------------------------------------------------
# wait_for_job
# ---------------------------------------------------------------------------


def job_row(**fields) -> ImageJob:
    photo = Photo.objects.create()
    return ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="w.jpg",
        size=1,
        sha256="0" * 64,
        **fields,
    )


@pytest.mark.django_db
def test_wait_for_job_times_out_with_assertion_error():
    job = job_row()
    with pytest.raises(AssertionError, match=rf"ImageJob {job.pk} still pending after 0.3s"):
        wait_for_job(job, timeout=0.3)


@pytest.mark.django_db
@pytest.mark.parametrize("state", [State.DONE, State.FAILED])
def test_wait_for_job_returns_a_finished_row(state):
    job = job_row(state=state)
    assert wait_for_job(job.pk, timeout=0.1).state == state
    assert wait_for_job(job, timeout=0.1).pk == job.pk


@pytest.mark.django_db
def test_wait_for_job_unknown_id_raises():
    with pytest.raises(ImageJob.DoesNotExist):
        wait_for_job("00000000-0000-0000-0000-000000000000", timeout=0.1)


# ---------------------------------------------------------------------------
# ImageJobTestMixin
# ---------------------------------------------------------------------------


class MixinCase(ImageJobTestMixin, unittest.TestCase):
    def runTest(self):  # noqa: N802 - unittest naming
        pass


@pytest.fixture
def case():
    return MixinCase()


@pytest.mark.django_db
class TestImageJobTestMixin:
    @pytest.mark.parametrize("state", [State.DONE, State.SAVED])
    def test_assert_image_saved_passes(self, case, state):
        case.assertImageSaved(job_row(state=state))

    @pytest.mark.parametrize("state", [State.PENDING, State.FAILED])
    def test_assert_image_saved_fails(self, case, state):
        job = job_row(state=state, error_code="boom" if state == State.FAILED else "")
        with pytest.raises(AssertionError, match=f"is {state}"):
            case.assertImageSaved(job)

    def test_assert_image_saved_reads_the_row_not_the_object(self, case):
        job = job_row()
        ImageJob.objects.filter(pk=job.pk).update(state=State.DONE)
        case.assertImageSaved(job)  # the in-memory object still says pending
        assert job.state == State.DONE

    def test_assert_image_failed_passes(self, case):
        job = job_row(state=State.FAILED, error_code="not_an_image")
        case.assertImageFailed(job)
        case.assertImageFailed(job, "not_an_image")

    def test_assert_image_failed_fails_when_not_failed(self, case):
        with pytest.raises(AssertionError, match="not failed"):
            case.assertImageFailed(job_row(state=State.DONE))

    def test_assert_image_failed_fails_on_another_code(self, case):
        job = job_row(state=State.FAILED, error_code="checksum_mismatch")
        with pytest.raises(AssertionError, match="checksum_mismatch, not not_an_image"):
            case.assertImageFailed(job, "not_an_image")

    def test_run_image_jobs_is_run_jobs_eagerly(self, case):
        original = tasks.publish
        with case.run_image_jobs():
            assert tasks.publish is not original
        assert tasks.publish is original


def test_mixin_assertions_survive_python_optimize():
    """Regression: bare asserts vanished under python -O and every assertion passed."""
    script = (
        "from async_image_save.testing import ImageJobTestMixin\n"
        "class Job:\n"
        "    pk, state, error_code = 1, 'done', ''\n"
        "    def refresh_from_db(self): pass\n"
        "try:\n"
        "    ImageJobTestMixin().assertImageFailed(Job())\n"
        "except AssertionError:\n"
        "    print('raised')\n"
        "else:\n"
        "    print('passed silently')\n"
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "raised"
