"""Claim-check staging, every broker x every staging backend, end to end; the sweep; the outbox.

Each (broker, backend) pair sends a 100 KB, a 5 MB and a 40 MB JPEG (and a 100 KB
non-image) through ``save_image()`` in a driver subprocess (the web side) to a
real worker subprocess, with ``ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0`` so that
every payload is staged in that backend. Brokers are the shared Redis and
RabbitMQ servers, on queues of our own (the RabbitMQ queue is deleted
afterwards). Checks: the stored bytes, the thumbnails, and that no staged bytes
are left once the job has ended, done or failed. Then ``--sweep-staging``
(orphans) and durable mode's outbox (in-process, the publish stubbed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from async_image_save.models import ImageJob, StagedPayload, Thumbnail
from async_image_save.staging import get_stager, resolve_ref
from async_image_save.testing import WorkerProcess
from tests.conftest import make_worker, wait_for_job, worker_env
from tests.faults import drive, sized_jpeg
from tests.models import Photo

REDIS_URL = os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AIS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKENDS = ["redis", "directory", "database", "storage"]
SIZES = {"100KB": 100_000, "5MB": 5_000_000, "40MB": 40_000_000}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix-images")
    paths = {}
    for seed, (label, size) in enumerate(SIZES.items()):
        paths[label] = root / f"{label}.jpg"
        paths[label].write_bytes(sized_jpeg(size, seed=seed))
    paths["garbage"] = root / "garbage.jpg"
    paths["garbage"].write_bytes(os.urandom(100_000))  # not an image: fails in the worker
    return paths


@pytest.fixture(scope="module")
def matrix_workers(request, django_db_setup, tmp_path_factory):
    """One worker per broker, started on first use and stopped at the end of the module."""
    started: dict[str, tuple[dict, WorkerProcess]] = {}
    logs = tmp_path_factory.mktemp("matrix-logs")

    def get(broker: str) -> tuple[dict, WorkerProcess]:
        if broker not in started:
            request.getfixturevalue("redis_service")  # redis staging uses it on both brokers
            if broker == "rabbitmq":
                request.getfixturevalue("rabbitmq_service")
            queue = f"ais-matrix-{broker}-{uuid.uuid4().hex[:8]}"
            env = worker_env(
                AIS_BROKER_URL=REDIS_URL if broker == "redis" else AMQP_URL,
                AIS_QUEUE=queue,
                AIS_SETTINGS_JSON=json.dumps({"ASYNC_IMAGE_SAVE_STAGING_URL": REDIS_URL}),
            )
            worker = make_worker(env, queue, logs / f"{broker}.log")
            started[broker] = (env, worker)
            worker.start()
        return started[broker]

    yield get
    for broker, (env, worker) in started.items():
        worker.stop(signal.SIGKILL)  # idle, and its queue is deleted next
        if broker == "rabbitmq":
            from kombu import Connection

            with Connection(AMQP_URL) as conn:
                conn.default_channel.queue_delete(env["AIS_QUEUE"])


def staged_left(ref: str) -> bool:
    stager, key = resolve_ref(ref)
    return stager.exists(key)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_staged_uploads_end_to_end(broker, backend, images, matrix_workers, settings):
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = REDIS_URL  # for staged_left() in this process
    env, worker = matrix_workers(broker)
    driver_env = dict(env)
    driver_env["AIS_SETTINGS_JSON"] = json.dumps(
        {
            "ASYNC_IMAGE_SAVE_STAGING": backend,
            "ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES": 0,
            "ASYNC_IMAGE_SAVE_STAGING_URL": REDIS_URL,
        }
    )
    stem = uuid.uuid4().hex[:8]
    labels = [*SIZES, "garbage"]
    ops = [
        {"op": "upload", "model": "tests.Photo", "file": str(images[label]), "name": f"{stem}.jpg"}
        for label in labels
    ]
    started = time.monotonic()
    results = dict(zip(labels, drive(driver_env, ops, timeout=180), strict=True))
    for label in labels:
        wait_for_job(results[label]["job"], timeout=120)
    elapsed = time.monotonic() - started

    for label in SIZES:
        up = results[label]
        job = ImageJob.objects.get(pk=up["job"])
        assert job.state == "done", (label, job.error_code, job.error, worker.log_tail())
        assert job.staged_ref.startswith(f"{backend}:"), job.staged_ref
        photo = Photo.objects.get(pk=up["pk"])
        data = images[label].read_bytes()
        assert job.size == len(data)
        with photo.image.open("rb") as fh:
            assert sha(fh.read()) == sha(data), label
        records = Thumbnail.objects.filter(source_name=photo.image.name)
        assert sorted(r.spec for r in records) == ["medium", "small"]
        for record in records:
            assert photo.image.storage.exists(record.name)
        assert not staged_left(job.staged_ref), f"{label}: staged bytes left after done"
        if backend == "database":
            assert job.published_at is not None  # the outbox row was confirmed
    bad = ImageJob.objects.get(pk=results["garbage"]["job"])
    assert (bad.state, bad.error_code) == ("failed", "not_an_image")
    assert bad.staged_ref.startswith(f"{backend}:")
    assert not staged_left(bad.staged_ref), "staged bytes left after a failed job"
    assert elapsed < 120


# --- the orphan sweep -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["directory", "database", "storage"])
def test_recover_sweep_removes_orphaned_staged_payloads_only(backend, settings, tmp_path):
    """``async_image_save_recover --sweep-staging``: orphans and payloads of finished jobs go,
    payloads a pending job or a retry still needs stay (until ASYNC_IMAGE_SAVE_STAGING_TTL)."""
    from datetime import timedelta

    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone

    from async_image_save.conf import conf

    settings.ASYNC_IMAGE_SAVE_STAGING = backend
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    stager = get_stager(backend)
    photo_type = ContentType.objects.get_for_model(Photo)

    def staged(state: str | None, code: str = "", age: timedelta = timedelta(0)) -> str:
        key = uuid.uuid4().hex
        stager.put(key, b"AIS" + os.urandom(100))
        if state is not None:
            ImageJob.objects.create(
                id=uuid.UUID(key),
                content_type=photo_type,
                object_id="1",
                field_name="image",
                source_name="x.jpg",
                size=100,
                sha256="0" * 64,
                staged_ref=stager.ref(key),
                state=state,
                error_code=code,
            )
            ImageJob.objects.filter(pk=key).update(updated_at=timezone.now() - age)
        return key

    ttl = timedelta(seconds=conf.ASYNC_IMAGE_SAVE_STAGING_TTL)
    gone = {
        "orphan": staged(None),
        "done": staged("done"),
        "saved": staged("saved"),
        "failed for good": staged("failed", "not_an_image"),
        "retryable, past the TTL": staged("failed", "storage_error", ttl + timedelta(hours=1)),
    }
    kept = {"pending": staged("pending"), "retryable": staged("failed", "storage_error")}
    try:
        out = io.StringIO()
        call_command(
            "async_image_save_recover", "--older-than", "1m", "--sweep-staging", stdout=out
        )
        assert {k: stager.exists(v) for k, v in gone.items()} == dict.fromkeys(gone, False), (
            out.getvalue()
        )
        assert {k: stager.exists(v) for k, v in kept.items()} == dict.fromkeys(kept, True)
        assert f"{len(gone)} staged payload(s) swept" in out.getvalue()
    finally:
        for key in [*gone.values(), *kept.values()]:
            stager.delete(key)


# --- durable mode: the outbox ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_durable_mode_stages_in_the_callers_transaction_and_relays_after_commit(
    settings, monkeypatch, image_upload
):
    """The payload row commits or rolls back with the job; publish only after commit;
    a publish that fails leaves the job in the outbox, and the relay sends it later."""
    from datetime import timedelta

    from django.db import transaction

    from async_image_save import recovery, save_image

    settings.ASYNC_IMAGE_SAVE_DURABLE = True
    settings.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = False  # read what was sent at once
    sent: list[tuple[str, str]] = []
    broker_down = False

    def publish(message, body):
        if broker_down:
            raise OSError("broker unreachable")
        sent.append((message["job_id"], body))

    monkeypatch.setattr("async_image_save.tasks.publish", publish)
    photo = Photo.objects.create()

    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = save_image(image_upload("a.jpg"), photo)
        assert StagedPayload.objects.filter(key=rolled_back.pk.hex).exists()
        raise RuntimeError("the view failed after save_image()")
    assert not ImageJob.objects.filter(pk=rolled_back.pk).exists()
    assert not StagedPayload.objects.filter(key=rolled_back.pk.hex).exists()

    with transaction.atomic():
        job = save_image(image_upload("b.jpg"), photo)
        assert StagedPayload.objects.filter(key=job.pk.hex).exists()
        assert sent == []  # nothing leaves before the commit
    assert sent == [(job.pk.hex, f"database:{job.pk.hex}")]
    job.refresh_from_db()
    assert job.published_at is not None

    broker_down = True
    lost = save_image(image_upload("c.jpg"), photo)  # autocommit: publishes at once, fails
    lost.refresh_from_db()
    assert (lost.state, lost.published_at) == ("pending", None)
    assert StagedPayload.objects.filter(key=lost.pk.hex).exists()

    broker_down = False
    monkeypatch.setattr(recovery, "UNPUBLISHED_GRACE", timedelta(0))
    actions = recovery.publish_outbox()
    assert [a.job.pk for a in actions] == [lost.pk]  # the confirmed job is not sent again
    assert sent[-1] == (lost.pk.hex, f"database:{lost.pk.hex}")
    lost.refresh_from_db()
    assert lost.published_at is not None
