"""contrib.drf.AsyncImageSerializerMixin through DRF's test client (and a real worker)."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from async_image_save.models import ImageJob
from tests.conftest import jpeg_bytes, wait_for_job
from tests.models import Photo

pytestmark = pytest.mark.urls("tests.urls_drf")


def upload(name="api.jpg", data=None):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data or jpeg_bytes(320, 240), content_type="image/jpeg")


def media_files():
    found = []
    for base, _dirs, names in os.walk(settings.MEDIA_ROOT):
        found += [os.path.join(base, n) for n in names]
    return found


@pytest.mark.django_db
def test_create_offloads_the_image_and_returns_the_job(
    monkeypatch, django_capture_on_commit_callbacks
):
    from async_image_save import tasks

    sent = []
    monkeypatch.setattr(tasks, "publish", lambda message, body: sent.append(message))
    before = media_files()
    client = APIClient()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/photos/", {"title": "api", "image": upload()}, format="multipart"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    job = ImageJob.objects.get()
    assert body["image"] is None  # nothing stored in the request
    assert body["image_jobs"]["image"]["id"] == str(job.pk)
    assert body["image_jobs"]["image"]["status_url"].startswith(f"/images/jobs/{job.pk}/?token=")
    assert media_files() == before
    assert sent and sent[0]["job_id"] == job.pk.hex
    # The token in the response lets this client poll without logging in.
    status = client.get(body["image_jobs"]["image"]["status_url"])
    assert status.status_code == 200 and status.json()["state"] == "pending"


@pytest.mark.django_db
def test_invalid_image_is_rejected_by_drf_with_no_job():
    response = APIClient().post(
        "/api/photos/",
        {"title": "bad", "image": upload("x.jpg", b"not an image")},
        format="multipart",
    )
    assert response.status_code == 400
    assert "image" in response.json()
    assert not ImageJob.objects.exists()


@pytest.mark.django_db
def test_update_without_a_file_keeps_the_image_and_makes_no_job():
    photo = Photo.objects.create(title="old", image="photos/kept.jpg")
    response = APIClient().patch(f"/api/photos/{photo.pk}/", {"title": "new"}, format="multipart")
    assert response.status_code == 200
    assert "image_jobs" not in response.json()
    photo.refresh_from_db()
    assert (photo.title, photo.image.name) == ("new", "photos/kept.jpg")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_create_through_a_real_worker(celery_worker):
    data = jpeg_bytes(640, 480)
    response = APIClient().post(
        "/api/photos/", {"title": "e2e", "image": upload("e2e.jpg", data)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    job = wait_for_job(response.json()["image_jobs"]["image"]["id"])
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo = Photo.objects.get(pk=response.json()["id"])
    with photo.image.open("rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == hashlib.sha256(data).hexdigest()
