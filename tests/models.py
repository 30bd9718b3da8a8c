"""Models used by the tests."""

from __future__ import annotations

from django.db import models

from tests.storages import flaky_storage, slow_storage


class Photo(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="photos", blank=True)


class Document(models.Model):
    """Two file fields: save_image() must be told which one."""

    cover = models.ImageField(upload_to="covers", blank=True)
    attachment = models.FileField(upload_to="attachments", blank=True)


class Note(models.Model):
    """No file field at all."""

    text = models.CharField(max_length=100)


class FlakyPhoto(models.Model):
    image = models.ImageField(upload_to="photos", storage=flaky_storage, blank=True)


class SlowPhoto(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="photos", storage=slow_storage, blank=True)


class Gallery(models.Model):
    """Two image fields, for forms and admin that offload several uploads at once."""

    title = models.CharField(max_length=100, blank=True)
    cover = models.ImageField(upload_to="gallery/covers", blank=True)
    banner = models.ImageField(upload_to="gallery/banners", blank=True)


class SizedPhoto(models.Model):
    """An ImageField with width_field/height_field."""

    image = models.ImageField(
        upload_to="sized", width_field="image_width", height_field="image_height", blank=True
    )
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)


# --- QueuedStorage and S3 (tests/test_storage.py, tests/test_s3.py) ---
# Storage callables: Django calls each once, when the model class is made, and
# migrations record the callable rather than the storage it returns.


def queued_fs_storage():
    """QueuedStorage over two real FileSystemStorages under MEDIA_ROOT."""
    import os

    from django.conf import settings
    from django.core.files.storage import FileSystemStorage

    from async_image_save.storage import QueuedStorage

    root = os.path.join(settings.MEDIA_ROOT, "queued")
    return QueuedStorage(
        local=FileSystemStorage(location=os.path.join(root, "local"), base_url="/media/local/"),
        remote=FileSystemStorage(
            location=os.path.join(root, "remote"), base_url="https://remote.example/"
        ),
    )


def s3_storage():
    """django-storages' S3Storage on the moto server and bucket named in the settings."""
    from botocore.config import Config
    from django.conf import settings
    from storages.backends.s3 import S3Storage

    return S3Storage(
        bucket_name=settings.AIS_S3_BUCKET,
        endpoint_url=settings.AIS_S3_ENDPOINT_URL,
        region_name="us-east-1",
        access_key=settings.AIS_S3_ACCESS_KEY,
        secret_key=settings.AIS_S3_SECRET_KEY,
        # One attempt and short timeouts: the fault tests stop the server, and
        # the library's own retries (with backoff) are what is under test.
        client_config=Config(
            retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10
        ),
    )


def s3_queued_storage():
    """QueuedStorage: a FileSystemStorage under MEDIA_ROOT now, S3 (moto) after the transfer."""
    import os

    from django.conf import settings
    from django.core.files.storage import FileSystemStorage

    from async_image_save.storage import QueuedStorage

    local = FileSystemStorage(
        location=os.path.join(settings.MEDIA_ROOT, "s3-local"), base_url="/media/s3-local/"
    )
    return QueuedStorage(local=local, remote=s3_storage())


class QueuedPhoto(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="queued", storage=queued_fs_storage, blank=True)


class S3Photo(models.Model):
    image = models.ImageField(upload_to="s3", storage=s3_storage, blank=True)


class S3QueuedPhoto(models.Model):
    image = models.ImageField(upload_to="s3q", storage=s3_queued_storage, blank=True)


# --- Fault injection (tests/faults.py, tests/test_faults.py, benchmarks/load.py) ---


def fault_storage():
    """A FileSystemStorage under MEDIA_ROOT/fault whose saves fail as tests/faults.py arms."""
    from tests.faults import fault_storage as make

    return make()


class FaultPhoto(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="photos", storage=fault_storage, blank=True)
