"""Shared fixtures: service probes, a real Celery worker subprocess, image factories.

A test that needs a service skips when it is missing locally, and fails when
``CI=true`` or ``AIS_SERVICES_REQUIRED=1`` (``scripts/test`` sets it): in CI a
missing service is a broken run, never a silent skip.
"""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from async_image_save.testing import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
FILES = Path(__file__).resolve().parent / "files"
SERVICES_REQUIRED = os.environ.get("CI") == "true" or os.environ.get("AIS_SERVICES_REQUIRED") == "1"


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (locally) or fail (CI) when the service at ``url`` does not answer."""
    parts = urlsplit(url)
    if not port_open(parts.hostname or "127.0.0.1", parts.port or 0):
        message = (
            f"{name} is not reachable at {parts.hostname}:{parts.port}; scripts/test starts it."
        )
        if SERVICES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def jpeg_bytes(
    width: int = 320, height: int = 240, color=(200, 80, 40), quality: int = 90
) -> bytes:
    """A real JPEG of the given size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture
def send_on_commit_thread(settings):
    """Send messages on the committing thread instead of the background pool (the default).

    For unit tests that capture ``tasks.publish`` in this process and read what was
    sent, or the job's state, as soon as the commit returns.
    """
    settings.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = False


@pytest.fixture
def image_upload():
    """Factory for an in-memory JPEG upload."""

    def make(name: str = "photo.jpg", width: int = 320, height: int = 240) -> SimpleUploadedFile:
        return SimpleUploadedFile(name, jpeg_bytes(width, height), content_type="image/jpeg")

    return make


@pytest.fixture
def fixture_file():
    """Bytes of a committed file in tests/files/."""
    return lambda name: (FILES / name).read_bytes()


@pytest.fixture(scope="session")
def redis_service():
    require_service("Redis", os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0"))


@pytest.fixture(scope="session")
def postgres_service():
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        require_service("PostgreSQL", f"postgresql://{db['HOST']}:{db['PORT']}")


@pytest.fixture(scope="session")
def rabbitmq_service():
    require_service(
        "RabbitMQ", os.environ.get("AIS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker subprocess that shares this run's DB, media and keys."""
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        AIS_TEST_TMP=settings.BASE_TMP,
        AIS_RUN_ID=settings.RUN_ID,
        AIS_MEDIA_ROOT=settings.MEDIA_ROOT,
        AIS_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        AIS_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    if connection.vendor == "postgresql":
        env["AIS_PG_DB"] = connection.settings_dict["NAME"]
    env.update(extra)
    return env


def make_worker(
    env: dict[str, str], queue: str, log_path: Path, cls: type[WorkerProcess] = WorkerProcess
) -> WorkerProcess:
    """A worker subprocess (``cls``) of the test app (``tests.celery_app``) on ``queue``."""
    return cls("tests.celery_app", queue, env, log_path=log_path, cwd=ROOT)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, redis_service, postgres_service):
    """One real worker process for the session, on this run's own queue."""
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    worker = make_worker(worker_env(), queue, Path(settings.BASE_TMP) / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def wait_for_job(job_id, states=("done", "failed"), timeout: float = 60):
    """Poll the job row until it reaches one of ``states``; return it."""
    from async_image_save.models import ImageJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ImageJob.objects.get(pk=job_id)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout}s")


def noisy_jpeg(width: int, height: int, quality: int = 92, seed: int = 1) -> bytes:
    """A JPEG that does not compress away (random noise): about 0.8-1 byte per pixel."""
    import random

    rnd = random.Random(seed)
    noise = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=quality)
    return out.getvalue()
