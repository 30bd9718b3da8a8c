"""Helpers for testing a project's own upload views.

Two ways to run the jobs that ``save_image()`` queues:

* **eagerly**, in the test process: :func:`run_jobs_eagerly` (a context manager)
  or the ``async_image_eager`` pytest fixture. The payload is still encoded,
  decoded, verified and saved through the real code path; only Celery is skipped.
* **through a real worker**: the ``async_image_worker`` fixture starts
  ``celery -A <app> worker`` in a subprocess (set ``ASYNC_IMAGE_SAVE_TEST_CELERY_APP``
  or pass ``--async-image-celery-app``) and :func:`wait_for_job` polls the row.
  Use it with ``@pytest.mark.django_db(transaction=True)`` so the worker sees the data.

Enable the fixtures with ``pytest_plugins = ["async_image_save.testing"]`` in
your ``conftest.py``. For ``unittest`` style tests use :class:`ImageJobTestMixin`.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile


def make_image_file(
    name: str = "test.jpg",
    size: tuple[int, int] = (64, 48),
    color: Any = (200, 80, 40),
    image_format: str | None = None,
) -> SimpleUploadedFile:
    """A real, small image upload (format from the extension unless given)."""
    from PIL import Image

    fmt = image_format or {
        "jpg": "JPEG",
        "jpeg": "JPEG",
        "png": "PNG",
        "gif": "GIF",
        "webp": "WEBP",
    }.get(name.rsplit(".", 1)[-1].lower(), "JPEG")
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return SimpleUploadedFile(name, out.getvalue(), content_type=f"image/{fmt.lower()}")


def _run_in_process(message: dict[str, Any], body: bytes | str) -> None:
    from async_image_save import processing

    state = processing.save_upload(
        message["job_id"], body, model=message["model"], pk=message["pk"], field=message["field"]
    )
    if state == "saved" and message["thumbnails"]:
        processing.make_thumbnails(message["job_id"])


def _bind_in_process(message: dict[str, Any], name: str) -> None:
    from async_image_save import processing

    state = processing.bind_stored(
        message["job_id"], name, model=message["model"], pk=message["pk"], field=message["field"]
    )
    if state == "saved" and message["thumbnails"]:
        processing.make_thumbnails(message["job_id"])


def _thumbnails_in_process(job_id: str, queue: str | None = None) -> None:
    from async_image_save import processing

    processing.make_thumbnails(job_id)


def _regenerate_in_process(args: tuple[Any, ...], **options: Any) -> None:
    from async_image_save import processing

    processing.regenerate(*args)


@contextmanager
def run_jobs_eagerly() -> Iterator[None]:
    """Within the block, queued jobs run in this process when their transaction commits.

    They run on the committing thread (``ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND``
    is off inside the block), so the job has ended when ``commit()`` returns.
    """
    from django.test import override_settings

    from async_image_save import tasks

    originals = (
        tasks.publish,
        tasks.publish_stored,
        tasks.publish_thumbnails,
        tasks.regenerate_thumbnails.apply_async,
    )
    tasks.publish, tasks.publish_stored = _run_in_process, _bind_in_process
    tasks.publish_thumbnails = _thumbnails_in_process
    tasks.regenerate_thumbnails.apply_async = _regenerate_in_process
    try:
        with override_settings(ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND=False):
            yield
    finally:
        (
            tasks.publish,
            tasks.publish_stored,
            tasks.publish_thumbnails,
            tasks.regenerate_thumbnails.apply_async,
        ) = originals


def wait_for_job(job: Any, timeout: float = 60.0) -> Any:
    """Poll until ``job`` (an ImageJob or its id) is done or failed; return the fresh row."""
    from async_image_save.models import ImageJob

    job_id = getattr(job, "pk", job)
    deadline = time.monotonic() + timeout
    while True:
        row = ImageJob.objects.get(pk=job_id)
        if row.is_finished:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"ImageJob {job_id} still {row.state} after {timeout}s")
        time.sleep(0.1)


class ImageJobTestMixin:
    """``TestCase`` mixin: ``with self.run_image_jobs(): ...`` and job assertions."""

    def run_image_jobs(self) -> Any:
        """Context manager: jobs queued inside run eagerly at commit."""
        return run_jobs_eagerly()

    def assertImageSaved(self, job: Any) -> None:  # noqa: N802 - unittest naming
        """The job ended ``done`` (or ``saved`` without thumbnails)."""
        job.refresh_from_db()
        if job.state not in ("done", "saved"):
            raise AssertionError(f"job {job.pk} is {job.state}: {job.error_code} {job.error}")

    def assertImageFailed(self, job: Any, code: str | None = None) -> None:  # noqa: N802
        """The job ended ``failed`` (with ``code`` if given)."""
        job.refresh_from_db()
        if job.state != "failed":
            raise AssertionError(f"job {job.pk} is {job.state}, not failed")
        if code is not None and job.error_code != code:
            raise AssertionError(f"job {job.pk} failed with {job.error_code}, not {code}")


class WorkerProcess:
    """A ``celery worker --pool=solo`` subprocess for end-to-end tests.

    ``app`` is the Celery app (``-A``), ``queue`` the only queue it consumes
    (default: the app's), ``env`` variables added to this process's
    environment. The worker's output goes to ``log_path`` (default: a
    temporary file), so it never blocks on a full pipe; :meth:`log_tail`
    shows its end. It runs without gossip, mingle and heartbeats, under a
    node name of its own, so several can share a broker. A test can
    :meth:`stop` it with any signal and :meth:`start` it again.
    """

    def __init__(
        self,
        app: str,
        queue: str | None = None,
        env: dict[str, str] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.app, self.queue, self.cwd = app, queue, cwd
        self.env = {**os.environ, **(env or {})}
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="async-image-worker-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.name = name or f"ais-{os.getpid()}-{time.monotonic_ns()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker and wait until it says it is ready."""
        command = [sys.executable, "-m", "celery", "-A", self.app, "worker", "--pool=solo"]
        command += ["--loglevel=INFO", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat", "-n", f"{self.name}@%h"]
        if self.queue:
            command += ["-Q", self.queue]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Celery worker exited early:\n{self.log_tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                if b" ready." in log.read():
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Celery worker not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send ``sig`` (default: a warm shutdown) and wait; kill it after ``timeout``."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the worker's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for projects
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        parser.addoption(
            "--async-image-celery-app", default=None, help="Celery app for async_image_worker"
        )

    @pytest.fixture
    def async_image_eager() -> Iterator[None]:
        """Run queued image jobs in the test process at commit."""
        with run_jobs_eagerly():
            yield

    @pytest.fixture
    def image_file() -> Any:
        """Factory: ``image_file("a.png", size=(10, 10))`` -> SimpleUploadedFile."""
        return make_image_file

    @pytest.fixture(scope="session")
    def async_image_worker(
        request: Any, django_db_setup: Any, django_db_blocker: Any
    ) -> Iterator[WorkerProcess]:
        """A real Celery worker subprocess connected to the test database."""
        from django.db import connection

        app = request.config.getoption("--async-image-celery-app") or os.environ.get(
            "ASYNC_IMAGE_SAVE_TEST_CELERY_APP"
        )
        if not app:
            raise RuntimeError(
                "async_image_worker needs your Celery app: pass --async-image-celery-app=proj "
                "or set ASYNC_IMAGE_SAVE_TEST_CELERY_APP."
            )
        env = {"ASYNC_IMAGE_SAVE_TEST_DATABASE_NAME": str(connection.settings_dict["NAME"])}
        worker = WorkerProcess(app, env=env)
        worker.start()
        yield worker
        worker.stop()
