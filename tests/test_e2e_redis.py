"""End to end through a real Celery worker process, Redis broker and PostgreSQL.

Each test goes through ``save_image()`` and the real worker subprocess started
by the ``celery_worker`` fixture; nothing here runs eagerly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.db import transaction
from PIL import Image

from async_image_save import save_image
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.tasks import publish
from tests.conftest import ROOT, jpeg_bytes, noisy_jpeg, wait_for_job, worker_env
from tests.models import FlakyPhoto, Photo, SlowPhoto
from tests.storages import read_control, write_control

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha(field_file) -> str:
    with field_file.open("rb") as fh:
        return sha(fh.read())


def files_under(path: str) -> list[str]:
    found = []
    for base, _dirs, names in os.walk(path):
        found += [os.path.relpath(os.path.join(base, n), path) for n in names]
    return sorted(found)


def thumb_sizes(field_file) -> dict[str, tuple[int, int]]:
    sizes = {}
    for thumb in Thumbnail.objects.filter(source_name=field_file.name):
        with field_file.storage.open(thumb.name) as fh, Image.open(fh) as im:
            sizes[thumb.spec] = im.size
            assert (thumb.width, thumb.height) == im.size
    return sizes


def test_happy_path_inline_saves_bytes_and_thumbnails(celery_worker):
    data = jpeg_bytes(800, 600, quality=60)  # a flat image: a few KiB
    assert len(data) < 16 * 1024
    photo = Photo.objects.create(title="cat")
    job = save_image(SimpleUploadedFile("cat.jpg", data, "image/jpeg"), photo)
    assert job.state == ImageJob.State.PENDING
    assert job.staged_ref == ""  # small enough to travel inside the message

    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert photo.image.name.startswith("photos/cat")
    assert stored_sha(photo.image) == sha(data)
    assert thumb_sizes(photo.image) == {"small": (200, 150), "medium": (800, 600)}
    assert job.attempts == 1


def test_large_upload_is_staged_in_redis_and_cleaned(celery_worker):
    data = noisy_jpeg(2000, 1500)  # ~3 MB: over FILE_UPLOAD_MAX_MEMORY_SIZE, a temp file
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    upload = TemporaryUploadedFile("big.jpg", "image/jpeg", len(data), None)
    upload.write(data)
    upload.seek(0)
    photo = Photo.objects.create()
    job = save_image(upload, photo)
    upload.close()
    assert job.staged_ref.startswith("redis:")

    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo.refresh_from_db()
    assert stored_sha(photo.image) == sha(data)
    assert thumb_sizes(photo.image) == {"small": (200, 150), "medium": (800, 600)}
    client = redis.Redis.from_url(os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    key = settings.ASYNC_IMAGE_SAVE_STAGING_PREFIX + job.staged_ref.split(":", 1)[1]
    assert client.exists(key) == 0


def test_nothing_sent_before_commit_and_nothing_on_rollback(celery_worker):
    photo = Photo.objects.create()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = save_image(SimpleUploadedFile("a.jpg", jpeg_bytes(), "image/jpeg"), photo)
        raise RuntimeError("the view failed after save_image")
    assert not ImageJob.objects.filter(pk=rolled_back.pk).exists()

    with transaction.atomic():
        job = save_image(SimpleUploadedFile("b.jpg", jpeg_bytes(), "image/jpeg"), photo)
        # Still inside the transaction: the worker cannot have seen the job.
        assert ImageJob.objects.get(pk=job.pk).attempts == 0
    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error)
    photo.refresh_from_db()
    assert photo.image.name.startswith("photos/b")
    # The rolled-back upload never reached the storage.
    assert not [
        n
        for n in files_under(os.path.join(settings.MEDIA_ROOT, "photos"))
        if os.path.basename(n).startswith(("a.", "a_"))
    ]


def test_update_fields_keeps_a_concurrent_edit(celery_worker):
    write_control("slow-started", "0")
    write_control("slow-release", "0")
    photo = SlowPhoto.objects.create(title="before")
    job = save_image(SimpleUploadedFile("slow.jpg", jpeg_bytes(), "image/jpeg"), photo)
    for _ in range(300):
        if read_control("slow-started") == "1":
            break
        import time

        time.sleep(0.05)
    assert read_control("slow-started") == "1", celery_worker.log_tail()
    # The worker has loaded the instance and is writing the file: edit another field now.
    SlowPhoto.objects.filter(pk=photo.pk).update(title="edited meanwhile")
    write_control("slow-release", "1")

    assert wait_for_job(job.pk).state == "done"
    photo.refresh_from_db()
    assert photo.title == "edited meanwhile"
    assert photo.image.name.startswith("photos/slow")


def test_deleted_instance_fails_and_writes_nothing(celery_worker):
    before = files_under(settings.MEDIA_ROOT)
    photo = Photo.objects.create()
    with transaction.atomic():
        job = save_image(SimpleUploadedFile("gone.jpg", jpeg_bytes(), "image/jpeg"), photo)
        photo.delete()
    job = wait_for_job(job.pk)
    assert job.state == "failed"
    assert job.error_code == "object_missing"
    assert "no longer exists" in job.error
    assert files_under(settings.MEDIA_ROOT) == before


def test_checksum_mismatch_fails_without_writing(celery_worker):
    photo = Photo.objects.create()
    with transaction.atomic():
        job = save_image(SimpleUploadedFile("bad.jpg", jpeg_bytes(), "image/jpeg"), photo)
        ImageJob.objects.filter(pk=job.pk).update(sha256="0" * 64)
    job = wait_for_job(job.pk)
    assert (job.state, job.error_code) == ("failed", "checksum_mismatch")
    photo.refresh_from_db()
    assert not photo.image


def test_not_an_image_fails_with_clear_code(celery_worker):
    photo = Photo.objects.create()
    upload = SimpleUploadedFile("note.jpg", b"just text, not a JPEG", "image/jpeg")
    job = wait_for_job(save_image(upload, photo).pk)
    assert (job.state, job.error_code) == ("failed", "not_an_image")
    photo.refresh_from_db()
    assert not photo.image


def test_storage_failing_twice_then_succeeding_saves_once(celery_worker):
    write_control("flaky-failures", "2")
    write_control("flaky-attempts", "0")
    data = jpeg_bytes(500, 400)
    photo = FlakyPhoto.objects.create()
    job = wait_for_job(save_image(SimpleUploadedFile("f.jpg", data, "image/jpeg"), photo).pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    assert job.attempts == 3
    photo.refresh_from_db()
    assert stored_sha(photo.image) == sha(data)
    originals = [
        n
        for n in files_under(os.path.join(settings.MEDIA_ROOT, "flaky", "photos"))
        if not n.startswith("thumbs")
    ]
    assert originals == [os.path.basename(photo.image.name)]  # no half-written leftovers


def test_storage_failing_forever_ends_failed_with_the_error(celery_worker, settings):
    write_control("flaky-failures", "99")
    photo = FlakyPhoto.objects.create()
    job = wait_for_job(
        save_image(SimpleUploadedFile("never.jpg", jpeg_bytes(), "image/jpeg"), photo).pk
    )
    write_control("flaky-failures", "0")
    assert (job.state, job.error_code) == ("failed", "storage_error")
    assert "injected storage failure" in job.error
    assert job.attempts == 6  # the first try plus ASYNC_IMAGE_SAVE_MAX_RETRIES (5)
    photo.refresh_from_db()
    assert not photo.image


def test_redelivered_message_saves_once(celery_worker):
    data = jpeg_bytes(300, 200)
    photo = Photo.objects.create()
    job = wait_for_job(save_image(SimpleUploadedFile("once.jpg", data, "image/jpeg"), photo).pk)
    assert job.state == "done", (job.error_code, job.error)
    from async_image_save.payload import UploadPayload

    frame = UploadPayload.from_upload(SimpleUploadedFile("once.jpg", data, "image/jpeg")).encode()
    message = {
        "job_id": job.pk.hex,
        "model": "tests.Photo",
        "pk": str(photo.pk),
        "field": "image",
        "queue": None,
        "thumbnails": True,
        "task_id": job.task_id,  # the same task id, as a broker redelivery would carry
    }
    publish(message, frame)
    publish(message, frame)
    marker = Photo.objects.create()  # a later job on the same queue: when it is done,
    later = save_image(SimpleUploadedFile("m.jpg", data, "image/jpeg"), marker)
    assert wait_for_job(later.pk).state == "done"  # the duplicates were processed before it
    job.refresh_from_db()
    assert job.attempts == 1
    photo.refresh_from_db()
    saved = [n for n in files_under(os.path.join(settings.MEDIA_ROOT, "photos")) if "once" in n]
    assert sorted(saved) == sorted(
        [os.path.basename(photo.image.name)]
        + [
            t.name.split("photos/", 1)[1]
            for t in Thumbnail.objects.filter(source_name=photo.image.name)
        ]
    )


def test_a_worker_logs_the_check_errors_of_its_settings_when_it_starts(tmp_path, redis_service):
    """``celery worker`` runs no system checks: the app reports its own at worker start."""
    import json

    from tests.conftest import make_worker

    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-checks"
    env = worker_env(AIS_SETTINGS_JSON=json.dumps({"ASYNC_IMAGE_SAVE_DURABLE": "False"}))
    worker = make_worker(env, queue, tmp_path / "worker.log")
    worker.start()
    try:
        log = worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    assert "System check at worker start" in log
    assert "async_image_save.E019" in log and "ASYNC_IMAGE_SAVE_DURABLE" in log


def test_unreachable_broker_marks_the_job_failed(celery_worker):
    """A web process whose broker is down: save_image returns, the job says why it failed."""
    photo = Photo.objects.create()
    script = (
        "import django, json; django.setup();"
        "from django.core.files.uploadedfile import SimpleUploadedFile;"
        "from async_image_save import save_image; from tests.models import Photo;"
        f"job = save_image(SimpleUploadedFile('x.jpg', {jpeg_bytes()!r}, 'image/jpeg'),"
        f" Photo.objects.get(pk={photo.pk}));"
        "print(job.pk)"
    )
    env = worker_env(AIS_BROKER_URL="redis://127.0.0.1:1/0")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    job = ImageJob.objects.get(pk=result.stdout.strip().splitlines()[-1])
    assert (job.state, job.error_code) == ("failed", "broker_unreachable")
    assert "broker" in job.error
    assert "could not queue job" in result.stderr  # logged, not silent


def test_process_stored_binds_a_direct_upload_and_makes_thumbnails(celery_worker):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from async_image_save import process_stored

    data = jpeg_bytes(640, 480)
    name = default_storage.save("direct/browser-upload.jpg", ContentFile(data))
    photo = Photo.objects.create()
    job = wait_for_job(process_stored(name, photo).pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    assert (job.size, job.sha256) == (len(data), sha(data))
    photo.refresh_from_db()
    assert photo.image.name == name  # bound in place, not copied
    assert thumb_sizes(photo.image) == {"small": (200, 150), "medium": (640, 480)}


def test_process_stored_refuses_a_non_image_and_a_missing_object(celery_worker):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from async_image_save import process_stored

    name = default_storage.save("direct/evil.jpg", ContentFile(b"<svg onload=alert(1)>"))
    photo = Photo.objects.create()
    job = wait_for_job(process_stored(name, photo).pk)
    assert (job.state, job.error_code) == ("failed", "not_an_image")
    missing = wait_for_job(process_stored("direct/never-uploaded.jpg", photo).pk)
    assert (missing.state, missing.error_code) == ("failed", "stored_missing")
    photo.refresh_from_db()
    assert not photo.image
    with pytest.raises(ValueError, match="not a safe storage name"):
        process_stored("../etc/passwd", photo)


def test_workers_need_the_web_servers_secret_key_or_list_it_as_a_fallback(tmp_path):
    """The sha256 is signed with SECRET_KEY after the request: a worker with another key
    fails the job (``bad_signature``) and writes nothing; one that lists the web's key in
    SECRET_KEY_FALLBACKS (a key rotation) saves it."""
    from tests.conftest import make_worker

    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-keys"
    data = jpeg_bytes(64, 48)
    outcomes = {}
    for case, extra in {
        "other-key": {"AIS_SECRET_KEY": "a-key-the-web-never-had"},
        "rotated": {
            "AIS_SECRET_KEY": "the-new-key",
            "AIS_SECRET_KEY_FALLBACKS": settings.SECRET_KEY,
        },
    }.items():
        photo = Photo.objects.create(title=case)
        job = save_image(SimpleUploadedFile(f"{case}.jpg", data, "image/jpeg"), photo, queue=queue)
        worker = make_worker(worker_env(**extra), queue, tmp_path / f"{case}.log")
        worker.start()
        try:
            job = wait_for_job(job.pk)
        finally:
            worker.stop()
        photo.refresh_from_db()
        outcomes[case] = (job.state, job.error_code, job.sha256, photo.image.name)
    assert outcomes["other-key"] == ("failed", "bad_signature", "", "")
    state, code, sha256, name = outcomes["rotated"]
    assert (state, code, sha256) == ("done", "", hashlib.sha256(data).hexdigest())
    assert name.startswith("photos/rotated")
