"""End to end through a real Celery worker process, Redis broker and PostgreSQL."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from async_image_save import save_image
from async_image_save.models import ImageJob, Thumbnail
from tests.conftest import jpeg_bytes, wait_for_job
from tests.models import Photo

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_happy_path_saves_bytes_and_thumbnails(celery_worker):
    data = jpeg_bytes(1600, 1200)
    photo = Photo.objects.create(title="cat")
    job = save_image(SimpleUploadedFile("cat.jpg", data, "image/jpeg"), photo)
    assert job.state == ImageJob.State.PENDING

    job = wait_for_job(job.pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo.refresh_from_db()
    assert photo.image.name.startswith("photos/cat")
    with photo.image.open("rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    sizes = {}
    for thumb in Thumbnail.objects.filter(source_name=photo.image.name):
        with Image.open(os.path.join(photo.image.storage.location, thumb.name)) as im:
            sizes[thumb.spec] = im.size
        assert (thumb.width, thumb.height) == sizes[thumb.spec]
    assert sizes == {"small": (200, 150), "medium": (800, 600)}
