"""S3 for real: django-storages' S3Storage against moto's S3 server, through a real worker.

The module runs its own worker subprocess on its own queue, started with the
moto endpoint, the run's bucket and a Redis cache shared with this process in
its environment. Nothing is mocked: requests are counted at the server.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext, override_settings

from async_image_save import save_image
from async_image_save import transfer as transfer_module
from async_image_save.conf import conf
from async_image_save.models import QueuedFile, Thumbnail
from async_image_save.thumbnails import generate_thumbnails
from tests.conftest import jpeg_bytes, make_worker, wait_for_job, worker_env
from tests.models import S3Photo, S3QueuedPhoto
from tests.s3 import moto_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.django_db(transaction=True)]

QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-s3"
REDIS_URL = os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0")
CACHE_PREFIX = f"ais-test-cache-{settings.RUN_ID}"
PAGE = Template(
    "{% load async_image_save %}"
    '{% for p in photos %}{% thumbnail_img p.image "small" %}{% endfor %}'
)


@pytest.fixture(scope="module")
def s3_settings(moto_server, redis_service):  # noqa: F811
    """This process as the worker sees it: transfers on QUEUE, a Redis cache both share."""
    override = override_settings(
        ASYNC_IMAGE_SAVE_QUEUE=QUEUE,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": CACHE_PREFIX,
            }
        },
    )
    override.enable()
    yield moto_server
    override.disable()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{CACHE_PREFIX}:*", count=1000):
        client.delete(key)


@pytest.fixture(scope="module")
def s3_worker(s3_settings, django_db_setup, postgres_service):
    env = worker_env(
        AIS_S3_ENDPOINT_URL=settings.AIS_S3_ENDPOINT_URL,
        AIS_S3_BUCKET=settings.AIS_S3_BUCKET,
        AIS_CACHE_URL=REDIS_URL,
        AIS_QUEUE=QUEUE,
    )
    worker = make_worker(env, QUEUE, Path(settings.BASE_TMP) / "worker-s3.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def moto(s3_worker, s3_settings):
    if s3_settings.proc is None:  # a failed restart in an earlier test
        s3_settings.start()
    return s3_settings


def upload(name="photo.jpg", width=320, height=240, seed=0) -> SimpleUploadedFile:
    data = jpeg_bytes(width, height, color=(seed % 256, 80, 40))
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def s3_objects(moto, prefix: str) -> dict[str, int]:
    return moto.objects(settings.AIS_S3_BUCKET, prefix)


def fetch(url: str) -> bytes:
    assert url.startswith(settings.AIS_S3_ENDPOINT_URL), url
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.read()


def wait_for_rows(names, states=("remote",), timeout: float = 60) -> list[QueuedFile]:
    deadline = time.monotonic() + timeout
    while True:
        rows = list(QueuedFile.objects.filter(name__in=names))
        if len(rows) == len(names) and all(r.state in states for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"rows not {states} after {timeout}s: {rows}")
        time.sleep(0.1)


def wait_for_log(worker, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the worker log:\n{worker.log_tail()}")
        time.sleep(0.1)


def names_of(photo) -> list[str]:
    return [
        photo.image.name,
        *Thumbnail.objects.filter(source_name=photo.image.name).values_list("name", flat=True),
    ]


# --- saving to S3 -------------------------------------------------------------------------


def test_save_image_straight_to_s3_with_thumbnails(moto):
    photo = S3Photo.objects.create()
    source = upload("cat.jpg")
    data = source.read()
    job = wait_for_job(save_image(source, photo).pk)
    assert job.state == "done", (job.error_code, job.error)
    photo.refresh_from_db()
    objects = s3_objects(moto, "s3/")
    assert objects[photo.image.name] == len(data)
    thumbs = {t.spec: t for t in Thumbnail.objects.filter(source_name=photo.image.name)}
    assert set(thumbs) == {"small", "medium"}
    for thumb in thumbs.values():
        assert objects[thumb.name] == thumb.size
    assert fetch(photo.image.url) == data


def test_queued_storage_saves_locally_then_transfers_image_and_thumbnails(moto):
    photo = S3QueuedPhoto.objects.create()
    source = upload("dog.jpg")
    data = source.read()
    job = wait_for_job(save_image(source, photo).pk)
    assert job.state == "done", (job.error_code, job.error)
    photo.refresh_from_db()
    names = names_of(photo)
    assert len(names) == 3  # the image and its two thumbnails follow the same queue
    rows = wait_for_rows(names)
    objects = s3_objects(moto, "s3q/")
    for row in rows:
        local = photo.image.storage.local
        with local.open(row.name, "rb") as fh:
            local_bytes = fh.read()
        assert objects[row.name] == row.size == len(local_bytes)
        assert row.md5 == hashlib.md5(local_bytes).hexdigest()
    assert photo.image.url.startswith(f"{settings.AIS_S3_ENDPOINT_URL}/{settings.AIS_S3_BUCKET}/")
    assert fetch(photo.image.url) == data


def test_a_plain_model_save_goes_through_the_queue_and_deletes_remove_both_copies(moto):
    photo = S3QueuedPhoto(image=upload("plain.jpg"))
    photo.save()  # Django's own FileField path: QueuedStorage.save() in the "request"
    storage = photo.image.storage
    name = photo.image.name
    assert QueuedFile.objects.get(name=name).state in ("local", "transferring", "remote")
    wait_for_rows([name])
    assert name in s3_objects(moto, "s3q/")
    photo.image.delete(save=True)
    assert name not in s3_objects(moto, "s3q/")
    assert not storage.local.exists(name)
    assert not QueuedFile.objects.filter(name=name).exists()

    direct = S3Photo(image=upload("direct.jpg"))
    direct.save()
    assert direct.image.name in s3_objects(moto, "s3/")
    direct.image.delete(save=True)
    assert s3_objects(moto, "s3/direct") == {}


# --- no remote call per URL ------------------------------------------------------------------


def render_page(moto, photos) -> tuple[str, int, list[str]]:
    """Render 50 thumbnails; return the HTML, the S3 requests made and the queries run."""
    before = moto.settled_requests()
    with CaptureQueriesContext(connection) as queries:
        html = PAGE.render(Context({"photos": photos}))
    return html, moto.settled_requests() - before, [q["sql"] for q in queries]


def test_a_page_of_50_s3_thumbnails_makes_no_s3_request(moto):
    photos = []
    for i in range(50):
        photo = S3Photo.objects.create()
        photo.image.save(f"page{i}.jpg", ContentFile(jpeg_bytes(64, 48)), save=True)
        generate_thumbnails(photo, "image")
        photos.append(photo)
    photos = list(S3Photo.objects.filter(pk__in=[p.pk for p in photos]))
    html, requests, _ = render_page(moto, photos)
    assert requests == 0
    assert html.count(f'src="{settings.AIS_S3_ENDPOINT_URL}/') == 50
    assert "async-image-pending" not in html
    # The counter does see requests: one exists() is one HEAD.
    before = moto.settled_requests()
    assert photos[0].image.storage.exists(photos[0].image.name)
    assert moto.settled_requests() - before == 1


def test_a_page_of_50_queued_thumbnails_makes_no_s3_request_and_no_state_query(moto):
    photos = []
    for i in range(50):
        photo = S3QueuedPhoto.objects.create()
        photo.image.save(f"page{i}.jpg", ContentFile(jpeg_bytes(64, 48)), save=True)
        generate_thumbnails(photo, "image")  # thumbnails go local, then through the queue
        photos.append(photo)
    names = [n for p in photos for n in names_of(p)]
    assert len(names) == 150
    wait_for_rows(names, timeout=120)
    photos = list(S3QueuedPhoto.objects.filter(pk__in=[p.pk for p in photos]))
    for _ in range(2):  # the worker mirrored each flip into the shared cache: no first-render cost
        html, requests, queries = render_page(moto, photos)
        assert requests == 0
        assert not [q for q in queries if "queuedfile" in q.lower()]
        assert html.count(f'src="{settings.AIS_S3_ENDPOINT_URL}/') == 50


# --- faults ----------------------------------------------------------------------------


def test_s3_down_during_transfer_keeps_the_file_local_until_recover(moto, s3_worker):
    data = jpeg_bytes(120, 90)
    moto.stop()
    try:
        photo = S3QueuedPhoto.objects.create()
        photo.image.save("down.jpg", ContentFile(data), save=True)
        name = photo.image.name
        (row,) = wait_for_rows([name], states=("failed",), timeout=60)
        assert row.error_code == "remote_error"
        assert "Gave up after" in row.error and "Could not connect" in row.error, row.error
        assert row.attempts == conf.ASYNC_IMAGE_SAVE_MAX_RETRIES + 1
        # Still served, from the local copy.
        assert photo.image.url == f"/media/s3-local/{name}"
        with photo.image.open("rb") as fh:
            assert fh.read() == data
    finally:
        moto.start()
    out = io.StringIO()
    call_command("async_image_save_recover", "--transfers", "--retry-failed", stdout=out)
    assert f"requeued: transfer of {name}" in out.getvalue()
    wait_for_rows([name])
    assert s3_objects(moto, "s3q/")[name] == len(data)
    assert fetch(S3QueuedPhoto.objects.get(pk=photo.pk).image.url) == data


def test_a_transfer_redelivered_after_the_copy_uploads_nothing(moto, s3_worker):
    photo = S3QueuedPhoto.objects.create()
    photo.image.save("twice.jpg", ContentFile(jpeg_bytes(120, 90)), save=True)
    name = photo.image.name
    (row,) = wait_for_rows([name])
    before = moto.settled_requests()
    task_id = str(uuid.uuid4())
    transfer_module.transfer_file.apply_async(
        (row.storage, name), queue=QUEUE, serializer="msgpack", task_id=task_id
    )
    wait_for_log(s3_worker, f"{task_id}] succeeded")
    assert moto.settled_requests() == before
    assert QueuedFile.objects.get(pk=row.pk).attempts == row.attempts

    # A worker died after the upload and before the flip: the copy is checked, not redone.
    QueuedFile.objects.filter(pk=row.pk).update(state="transferring")
    log_before = moto.log_path.read_bytes()
    assert photo.image.storage.transfer(name) == "remote"
    new_lines = moto.log_path.read_bytes()[len(log_before) :].decode()
    assert '"HEAD ' in new_lines and '"PUT ' not in new_lines, new_lines


def test_a_local_copy_removed_before_the_transfer_fails_clearly(moto, s3_worker, monkeypatch):
    send = transfer_module.enqueue
    held = []
    monkeypatch.setattr(transfer_module, "enqueue", lambda *a, **k: held.append((a, k)))
    photo = S3QueuedPhoto.objects.create()
    photo.image.save("gone.jpg", ContentFile(jpeg_bytes(120, 90)), save=True)
    name = photo.image.name
    assert len(held) == 1
    os.remove(photo.image.storage.local.path(name))
    before = moto.settled_requests()
    send(*held[0][0], **held[0][1])  # now the worker gets the message
    (row,) = wait_for_rows([name], states=("failed",))
    assert row.error_code == "local_missing"
    assert name in row.error and "removed before the transfer" in row.error
    assert moto.settled_requests() == before  # nothing was uploaded
    assert name not in s3_objects(moto, "s3q/")
