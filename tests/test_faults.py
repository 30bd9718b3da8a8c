"""Fault suite: real worker processes, real brokers and PostgreSQL, faults on purpose.

Each scenario is its own test and starts its own worker subprocess(es) (solo pool,
``async_image_save.testing.WorkerProcess``) on its own queue, against our own Redis server
and RabbitMQ node (``tests/faults.py``), never the shared ones on 6379/5672. The
web side runs in a driver subprocess (``python -m tests.faults``) whose broker is
the test's own; the database is this run's PostgreSQL test database.

Worker settings (``AIS_SETTINGS_JSON``): a 4 s lease (default 600 s) and, on Redis,
a 3 s ``visibility_timeout`` swept every second (default 1 h), so that a crashed
delivery comes back within seconds instead of minutes. RabbitMQ runs with durable
queues (Celery's default) and publisher confirms (``confirm_publish``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from async_image_save.models import ImageJob, StagedPayload, Thumbnail
from async_image_save.testing import WorkerProcess
from tests.conftest import make_worker, wait_for_job, worker_env
from tests.faults import (
    RabbitNode,
    RedisServer,
    ScenarioError,
    TcpProxy,
    arm,
    disarm,
    drive,
    gate_entered,
    open_gate,
    read_signals,
    saves,
    sized_jpeg,
    wait_gate,
)
from tests.models import FaultPhoto

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LABEL = "fault"  # the FaultStorage of tests.models.FaultPhoto
LEASE = 4
SMALL = 30_000  # staged on Redis (over its 16 KiB inline limit), inline on RabbitMQ
BOTH = pytest.mark.parametrize("broker", ["redis", "rabbitmq"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_stem() -> str:
    return "t" + uuid.uuid4().hex[:10]


def media(*parts: str) -> Path:
    return Path(settings.MEDIA_ROOT, "fault", *parts)


def listing(path: Path, stem: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith(stem)) if path.exists() else []


def originals(stem: str) -> list[str]:
    return listing(media("photos"), stem)


def thumb_files(stem: str) -> list[str]:
    return listing(media("photos", "thumbs"), stem)


# --- servers, workers, the rig a test drives -------------------------------------------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_rabbit(tmp_path_factory):
    node = RabbitNode(Path(tmp_path_factory.mktemp("rabbit")))
    node.start()
    yield node
    node.stop()


class Worker(WorkerProcess):
    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except Exception as exc:
            raise ScenarioError(f"worker still running:\n{self.log_tail()}") from exc

    def log_count(self, text: str) -> int:
        return (
            self.log_path.read_text(errors="replace").count(text) if self.log_path.exists() else 0
        )


class Rig:
    """One test's broker, queue, workers and signal log."""

    def __init__(self, broker: str, server, tmp: Path) -> None:
        self.broker, self.server, self.tmp = broker, server, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.queue = f"ais-fault-{uuid.uuid4().hex[:8]}"
        self.signal_log = tmp / "signals.jsonl"
        self.workers: list[Worker] = []

    def env(self, queue: str | None = None, visibility: float = 3, **values) -> dict[str, str]:
        values = {"ASYNC_IMAGE_SAVE_LEASE_SECONDS": LEASE, **values}
        if self.broker == "rabbitmq":
            values["CELERY_BROKER_TRANSPORT_OPTIONS"] = {"confirm_publish": True}
        env = worker_env(
            AIS_BROKER_URL=self.server.url,
            AIS_QUEUE=queue or self.queue,
            AIS_SETTINGS_JSON=json.dumps(values),
            AIS_SIGNAL_LOG=str(self.signal_log),
        )
        if self.broker == "redis":
            env["AIS_VISIBILITY_TIMEOUT"] = str(visibility)
        return env

    def worker(self, queue: str | None = None, start: bool = True, env=None, **values) -> Worker:
        queue = queue or self.queue
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        worker = make_worker(env or self.env(queue, **values), queue, log_path, cls=Worker)
        self.workers.append(worker)
        if start:
            worker.start()
        return worker

    def start_all(self, workers: list[Worker]) -> None:
        errors: list[BaseException] = []

        def run(worker: Worker) -> None:
            try:
                worker.start()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise ScenarioError(str(errors[0]))

    def upload(self, stem: str, data: bytes, **extra) -> dict:
        path = self.tmp / f"{stem}.jpg"
        path.write_bytes(data)
        return {"op": "upload", "file": str(path), "name": path.name, **extra}

    def drive(self, ops: list[dict], **values) -> list[dict]:
        return drive(self.env(**values), ops)

    def signals(self, job_id: str) -> Counter:
        return Counter(s["signal"] for s in read_signals(self.signal_log) if s["job"] == job_id)

    def log_count(self, text: str) -> int:
        return sum(w.log_count(text) for w in self.workers)

    def wait_logs(self, text: str, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.log_count(text) < count:
            if time.monotonic() > deadline:
                raise ScenarioError(f"{text!r} seen {self.log_count(text)}/{count} times")
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until every delivery a worker received has finished (or been retried)."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.log_count("] received")
            ended = sum(
                self.log_count(text) for text in ("] succeeded in", "] retry: ", "] raised ")
            )
            if received == ended:
                self.settle()
                if self.log_count("] received") == received:
                    return
            if time.monotonic() > deadline:
                raise ScenarioError(f"{received - ended} deliveries still running\n{self.logs()}")
            time.sleep(0.1)

    def settle(self, quiet: float = 1.0, timeout: float = 20) -> None:
        """Wait until no worker has logged anything for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            sizes = [w.log_path.stat().st_size for w in self.workers if w.log_path.exists()]
            if sizes != last:
                last, since = sizes, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_tail(40)}" for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)


@pytest.fixture
def rig(request, tmp_path):
    """The test's rig on the broker of its ``broker`` parameter (default Redis)."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    broker = params.get("broker", "redis")
    server = request.getfixturevalue("own_redis" if broker == "redis" else "own_rabbit")
    disarm(LABEL)
    made = Rig(broker, server, tmp_path / "rig")
    yield made
    disarm(LABEL)  # opens any gate a worker still waits at
    made.stop()


def staged_exists(rig: Rig, ref: str) -> bool:
    scheme, _, key = ref.partition(":")
    if scheme == "redis":
        client = redis.Redis.from_url(rig.server.url)
        return bool(client.exists(settings.ASYNC_IMAGE_SAVE_STAGING_PREFIX + key))
    if scheme == "database":
        return StagedPayload.objects.filter(key=key).exists()
    if scheme == "directory":
        return Path(settings.ASYNC_IMAGE_SAVE_STAGING_DIR, key + ".payload").exists()
    raise AssertionError(ref)


def assert_saved_once(
    rig: Rig, job_id: str, stem: str, data: bytes, attempts=None, failed_before: int = 0
) -> ImageJob:
    """One final file, one field value, one set of thumbnails, one signal of each kind.

    ``failed_before``: the job failed that many times before a retry (image_failed each).
    """
    job = ImageJob.objects.get(pk=job_id)
    assert job.state == "done", (job.error_code, job.error, rig.logs())
    photo = FaultPhoto.objects.get(pk=int(job.object_id))
    assert photo.image.name == job.saved_name
    assert originals(stem) == [os.path.basename(job.saved_name)], "one final file"
    with photo.image.open("rb") as fh:
        assert sha(fh.read()) == sha(data)
    records = Thumbnail.objects.filter(source_name=job.saved_name)
    assert sorted(r.spec for r in records) == ["medium", "small"]
    assert thumb_files(stem) == sorted(os.path.basename(r.name) for r in records), (
        "one set of thumbnails"
    )
    expected = {"image_saved": 1, "thumbnails_ready": 1, "image_failed": failed_before}
    assert rig.signals(job.pk.hex) == +Counter(expected), "one signal"
    saved = [s for s in read_signals(rig.signal_log) if s["signal"] == "image_saved"]
    assert [s["name"] for s in saved if s["job"] == job.pk.hex] == [job.saved_name]
    if attempts is not None:
        assert job.attempts == attempts
    if job.staged_ref:
        assert not staged_exists(rig, job.staged_ref), "staged bytes left"
    return job


def job_row(job_id: str) -> ImageJob:
    return ImageJob.objects.get(pk=job_id)


def backdate(job_ids, by: timedelta = timedelta(minutes=2)) -> None:
    """Make jobs look untouched for ``by`` (what the recover command's --older-than reads)."""
    ImageJob.objects.filter(pk__in=job_ids).update(
        updated_at=timezone.now() - by, created_at=timezone.now() - by
    )


# --- worker killed, shut down ----------------------------------------------------------------


@BOTH
def test_worker_sigkilled_mid_save_saves_exactly_once_after_restart(rig, broker):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=11)
    arm(LABEL, "kill-before", match=f"photos/{stem}")
    worker = rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    assert worker.wait_exit() == -signal.SIGKILL
    job = job_row(up["job"])
    assert (job.state, job.attempts) == ("pending", 1)
    worker.start()  # a supervisor restarts it; the broker redelivers the unacked message
    wait_for_job(up["job"], timeout=60)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=2)


@BOTH
def test_restarted_worker_takes_over_the_lease_of_the_killed_one_at_once(rig, broker):
    """The job's lease names a process that no longer exists: no 600 s wait for it to expire."""
    stem, data = new_stem(), sized_jpeg(SMALL, seed=14)
    arm(LABEL, "kill-before", match=f"photos/{stem}")
    worker = rig.worker(ASYNC_IMAGE_SAVE_LEASE_SECONDS=600)
    [up] = rig.drive([rig.upload(stem, data)])
    assert worker.wait_exit() == -signal.SIGKILL
    assert job_row(up["job"]).claimed_until > timezone.now() + timedelta(minutes=5)
    worker.start()
    wait_for_job(up["job"], timeout=60)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=2)
    assert worker.log_count("the worker process holding it died; taking it over") == 1


def test_worker_killed_while_writing_leaves_no_partial_file(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=12)
    arm(LABEL, "kill-mid", match=f"photos/{stem}")
    worker = rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    assert worker.wait_exit() == -signal.SIGKILL
    worker.start()
    wait_for_job(up["job"], timeout=60)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=2)


def test_warm_shutdown_mid_save_finishes_the_upload_once(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=13)
    arm(LABEL, "gate", match=f"photos/{stem}")
    worker = rig.worker()
    [up, _] = rig.drive([rig.upload(stem, data), {"op": "wait_gate"}])
    worker.proc.send_signal(signal.SIGTERM)  # warm shutdown while the file is being written
    time.sleep(1)
    assert worker.proc.poll() is None, "a warm shutdown waits for the running task"
    open_gate(LABEL)
    assert worker.wait_exit() == 0
    job = job_row(up["job"])
    assert (job.state, job.attempts) == ("saved", 1), (job.error, worker.log_tail())
    worker.start()  # the thumbnail task was queued before the worker left
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=1)


def test_cold_shutdown_mid_save_redelivers_and_saves_once(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=14)
    arm(LABEL, "gate", match=f"photos/{stem}")
    worker = rig.worker()
    [up, _] = rig.drive([rig.upload(stem, data), {"op": "wait_gate"}])
    worker.proc.send_signal(signal.SIGQUIT)  # cold shutdown: the task is abandoned
    worker.wait_exit()
    assert job_row(up["job"]).state == "pending"
    worker.start()
    wait_for_job(up["job"], timeout=60)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data)


# --- duplicates, redelivery, concurrency -----------------------------------------------------


@BOTH
def test_duplicate_deliveries_to_a_second_worker_wait_and_change_nothing(rig, broker):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=21)
    arm(LABEL, "gate", match=f"photos/{stem}")
    first, second = rig.worker(start=False, visibility=600), rig.worker(start=False, visibility=600)
    rig.start_all([first, second])
    upload = rig.upload(stem, data)
    republish = {"op": "republish", "of": 0, "times": 2, "file": upload["file"]}
    up, _, _ = rig.drive([upload, {"op": "wait_gate"}, republish], visibility=600)
    # The idle worker gets a duplicate while the first holds the lease: it backs off.
    rig.wait_logs("retry: Retry in", 1)
    open_gate(LABEL)
    wait_for_job(up["job"], timeout=30)
    time.sleep(LEASE)  # the backed-off duplicates come back, find the job done
    rig.wait_idle()
    assert rig.log_count("save_upload[") >= 2 * 3  # received and finished, 3 deliveries
    assert_saved_once(rig, up["job"], stem, data, attempts=1)
    assert gate_entered(LABEL) == 1  # the duplicates never wrote a file


def test_task_outliving_visibility_timeout_and_lease_saves_once(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=22)
    arm(LABEL, "gate", match=f"photos/{stem}", gate="orig")
    arm(LABEL, "gate", match=f"thumbs/{stem}", gate="thumb")
    first = rig.worker(start=False, visibility=3, ASYNC_IMAGE_SAVE_LEASE_SECONDS=2)
    second = rig.worker(start=False, visibility=3, ASYNC_IMAGE_SAVE_LEASE_SECONDS=2)
    rig.start_all([first, second])
    up, _ = rig.drive([rig.upload(stem, data), {"op": "wait_gate", "gate": "orig"}])
    # Redis gives the unacked message to the other worker after 3 s; the 2 s lease has
    # expired, so it claims the job, saves it and starts on the thumbnails.
    wait_gate(LABEL, 1, gate="thumb", timeout=30)
    assert job_row(up["job"]).attempts == 2
    open_gate(LABEL, gate="orig")  # the first worker, its lease lost, now reaches its commit
    rig.wait_logs("async_image_save.save_upload[", 4)  # both deliveries finished
    rig.wait_logs("] succeeded in", 2)
    open_gate(LABEL, gate="thumb")
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=2)


def test_thumbnail_task_outliving_visibility_timeout_makes_one_set(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=23)
    arm(LABEL, "gate", match=f"thumbs/{stem}")
    first, second = rig.worker(start=False), rig.worker(start=False)
    rig.start_all([first, second])
    [up] = rig.drive([rig.upload(stem, data)])
    wait_gate(LABEL, 1, timeout=30)  # one worker writes the first thumbnail...
    rig.wait_logs("make_thumbnails[", 3, timeout=30)  # ...the other got the same task back
    time.sleep(1.5)  # let the second run finish writing its set
    open_gate(LABEL)
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=1)


def test_newer_upload_queued_later_but_processed_first_wins(rig):
    old_stem, new_stem_ = new_stem(), new_stem()
    old_data, new_data = sized_jpeg(SMALL, seed=31), sized_jpeg(SMALL, seed=32)
    held = f"{rig.queue}-held"
    rig.worker()
    old, new = rig.drive(
        [
            rig.upload(old_stem, old_data, queue=held),  # waits: no worker on that queue yet
            rig.upload(new_stem_, new_data, same_as=0),
        ]
    )
    assert wait_for_job(new["job"], timeout=30).state == "done"
    rig.worker(queue=held)  # the old upload is delivered only now
    old_job = wait_for_job(old["job"], timeout=30)
    rig.settle()
    assert (old_job.state, old_job.error_code) == ("failed", "superseded")
    assert originals(old_stem) == [] and thumb_files(old_stem) == []
    assert_saved_once(rig, new["job"], new_stem_, new_data, attempts=1)
    assert FaultPhoto.objects.get(pk=old["pk"]).image.name == job_row(new["job"]).saved_name
    assert rig.signals(old["job"]) == {"image_failed": 1}


def test_newer_upload_overtaking_one_being_written_wins(rig):
    old_stem, new_stem_ = new_stem(), new_stem()
    old_data, new_data = sized_jpeg(SMALL, seed=33), sized_jpeg(SMALL, seed=34)
    other = f"{rig.queue}-other"
    arm(LABEL, "gate", match=f"photos/{old_stem}")
    first, second = rig.worker(start=False), rig.worker(queue=other, start=False)
    rig.start_all([first, second])
    [old, _] = rig.drive([rig.upload(old_stem, old_data), {"op": "wait_gate"}])
    [new] = rig.drive([rig.upload(new_stem_, new_data, pk=old["pk"], queue=other)])
    assert wait_for_job(new["job"], timeout=30).state == "done"
    open_gate(LABEL)  # the older upload reaches its commit after the newer one saved
    old_job = wait_for_job(old["job"], timeout=30)
    rig.settle()
    assert (old_job.state, old_job.error_code) == ("failed", "superseded")
    assert originals(old_stem) == [] and thumb_files(old_stem) == []
    assert_saved_once(rig, new["job"], new_stem_, new_data, attempts=1)
    assert rig.signals(old["job"]) == {"image_failed": 1}


# --- poison messages -------------------------------------------------------------------------


def test_poison_message_fails_after_bounded_attempts_and_others_flow(rig):
    stems = [new_stem() for _ in range(4)]
    data = [sized_jpeg(SMALL, seed=40 + i) for i in range(4)]
    arm(LABEL, "kill-before", count=99, match=f"photos/{stems[0]}")  # kills on every try
    worker = rig.worker(ASYNC_IMAGE_SAVE_MAX_ATTEMPTS=2)
    ups = rig.drive([rig.upload(s, d) for s, d in zip(stems, data, strict=True)])
    crashes, deadline = 0, time.monotonic() + 90
    ids = [u["job"] for u in ups]
    while ImageJob.objects.filter(pk__in=ids, state__in=("pending", "saved")).exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"still unfinished after {crashes} crashes\n{rig.logs()}")
        if worker.proc.poll() is not None:  # a supervisor restarts the dead worker
            crashes += 1
            worker.start()
        time.sleep(0.1)
    rig.settle()
    poison = job_row(ids[0])
    assert (poison.state, poison.error_code) == ("failed", "too_many_attempts")
    assert poison.attempts == 3  # two crashed attempts, the third claim gives up
    assert crashes == 2
    assert not FaultPhoto.objects.get(pk=ups[0]["pk"]).image
    assert not staged_exists(rig, poison.staged_ref)
    assert rig.signals(ids[0]) == {"image_failed": 1}
    for up, stem, payload in zip(ups[1:], stems[1:], data[1:], strict=True):
        assert_saved_once(rig, up["job"], stem, payload, attempts=1)


# --- broker outages --------------------------------------------------------------------------


def stop_broker(rig: Rig) -> None:
    if rig.broker == "redis":
        rig.server.stop()
    else:
        rig.server.stop_app()


def start_broker(rig: Rig) -> None:
    if rig.broker == "redis":
        if rig.server.proc is None:
            rig.server.start()
    else:
        rig.server.start_app()


@BOTH
def test_broker_down_at_publish_fails_fast_without_durable_mode(rig, broker):
    stems = [new_stem() for _ in range(3)]
    stop_broker(rig)
    try:
        ups = rig.drive(
            [rig.upload(s, sized_jpeg(SMALL, seed=50)) for s in stems],
            ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES=2,  # the library's default, not the tests' 0
        )
    finally:
        start_broker(rig)
    print("request times (s):", [round(up["elapsed"], 3) for up in ups])
    for up in ups:
        assert up["elapsed"] < 2.0, up
        assert (up["state"], up["error_code"]) == ("failed", "broker_unreachable")


@BOTH
def test_broker_down_at_publish_durable_mode_completes_after_it_returns(rig, broker):
    stems = [new_stem() for _ in range(3)]
    data = [sized_jpeg(SMALL, seed=51 + i) for i in range(3)]
    durable = {"ASYNC_IMAGE_SAVE_DURABLE": True, "ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES": 2}
    stop_broker(rig)
    try:
        ups = rig.drive([rig.upload(s, d) for s, d in zip(stems, data, strict=True)], **durable)
    finally:
        start_broker(rig)
    print("request times (s):", [round(up["elapsed"], 3) for up in ups])
    for up in ups:
        assert up["elapsed"] < 2.0, up
        assert (up["state"], up["published"]) == ("pending", False), up
        assert up["staged_ref"].startswith("database:")
    rig.worker()
    [recovered] = rig.drive([{"op": "recover", "grace": 0}], **durable)
    assert "3 job(s) handled" in recovered["output"], recovered
    for up in ups:
        wait_for_job(up["job"], timeout=30)
    rig.settle()
    for up, stem, payload in zip(ups, stems, data, strict=True):
        assert_saved_once(rig, up["job"], stem, payload, attempts=1)


@BOTH
def test_broker_lost_while_jobs_queued_durable_mode_completes_them(rig, broker):
    """One job in flight, three queued, then the broker goes away and comes back.

    Redis runs without persistence, so its restart loses every queued message: the
    recover command (jobs older than --older-than) publishes them again from the
    database outbox. RabbitMQ keeps them (durable queue, persistent messages).
    """
    stems = [new_stem() for _ in range(4)]
    data = [sized_jpeg(SMALL, seed=60 + i) for i in range(4)]
    durable = {"ASYNC_IMAGE_SAVE_DURABLE": True}
    arm(LABEL, "gate", match=f"photos/{stems[0]}")
    rig.worker(**durable)
    ops = [rig.upload(stems[0], data[0]), {"op": "wait_gate"}]
    ops += [rig.upload(s, d) for s, d in zip(stems[1:], data[1:], strict=True)]
    ups = rig.drive(ops, **durable)
    ups = [ups[0]] + ups[2:]
    assert all(up["published"] for up in ups)
    stop_broker(rig)
    try:
        open_gate(LABEL)  # the running job finishes its save while the broker is away
        time.sleep(1)
    finally:
        if rig.broker == "redis":
            rig.server.restart()  # an empty Redis: every queued message is gone
        else:
            start_broker(rig)
    ids = [up["job"] for up in ups]
    if rig.broker == "redis":
        time.sleep(1)
        backdate([i for i in ids if job_row(i).state in ("pending", "saved")])
        [recovered] = rig.drive([{"op": "recover", "args": ["--older-than", "1m"]}], **durable)
        assert "job(s) handled" in recovered["output"], recovered
    for job_id in ids:
        wait_for_job(job_id, timeout=60)
    rig.settle()
    for up, stem, payload in zip(ups, stems, data, strict=True):
        assert_saved_once(rig, up["job"], stem, payload)


# --- database, storage, disk -----------------------------------------------------------------


def test_postgres_unavailable_for_10s_while_binding_is_retried(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=70)
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    try:
        env = rig.env(
            ASYNC_IMAGE_SAVE_MAX_RETRIES=8,  # retries spanning more than the outage
            ASYNC_IMAGE_SAVE_RETRY_BACKOFF=1.0,
            ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX=3.0,
        )
        env["AIS_PG_PORT"] = str(proxy.port)
        arm(LABEL, "gate", match=f"photos/{stem}")
        rig.worker(env=env)
        [up, _] = rig.drive([rig.upload(stem, data), {"op": "wait_gate"}])
        proxy.cut()  # PostgreSQL is unreachable for the worker for 10 s
        open_gate(LABEL)  # the file is written; binding it to the field needs the database
        time.sleep(10)
        proxy.restore()
        wait_for_job(up["job"], timeout=15)
        rig.settle()
        assert_saved_once(rig, up["job"], stem, data)
    finally:
        proxy.close()


def test_storage_failing_then_recovering_saves_once(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=80)
    arm(LABEL, "fail", count=2, match=f"photos/{stem}")  # each failure leaves a partial file
    rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, attempts=3)
    assert len([n for n in saves(LABEL) if n.startswith(f"photos/{stem}")]) == 3


def test_full_disk_leaves_no_partial_file_and_recovers_after_space_is_freed(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=81)
    arm(LABEL, "enospc", count=99, match=f"photos/{stem}")  # half written, then ENOSPC
    rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    job = wait_for_job(up["job"], timeout=60)
    assert (job.state, job.error_code) == ("failed", "storage_error"), rig.logs()
    assert "No space left on device" in job.error
    assert len(saves(LABEL)) == 6  # the first try and 5 retries
    assert originals(stem) == [], "no partial file at the final name"
    assert not FaultPhoto.objects.get(pk=up["pk"]).image
    assert staged_exists(rig, job.staged_ref)  # kept, so that the job can be retried
    disarm(LABEL)  # space freed
    [recovered] = rig.drive([{"op": "recover", "args": ["--older-than", "1m", "--retry-failed"]}])
    assert "requeued" in recovered["output"], recovered
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    assert_saved_once(rig, up["job"], stem, data, failed_before=1)


def test_thumbnail_step_failing_is_retried_alone(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=82)
    arm(LABEL, "fail", count=2, match=f"thumbs/{stem}")
    rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    job = assert_saved_once(rig, up["job"], stem, data, attempts=1)
    assert [n for n in saves(LABEL) if n.startswith(f"photos/{stem}")] == [job.saved_name]


def test_thumbnail_step_failing_for_good_keeps_the_original(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=83)
    arm(LABEL, "fail", count=99, match=f"thumbs/{stem}")
    rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    job = wait_for_job(up["job"], timeout=60)
    assert (job.state, job.error_code) == ("failed", "thumbnail_error"), rig.logs()
    photo = FaultPhoto.objects.get(pk=up["pk"])
    assert photo.image.name == job.saved_name  # the original stays bound and on disk
    assert originals(stem) == [os.path.basename(job.saved_name)]
    assert rig.signals(job.pk.hex) == {"image_saved": 1, "image_failed": 1}
    disarm(LABEL)
    [recovered] = rig.drive([{"op": "recover", "args": ["--older-than", "1m", "--retry-failed"]}])
    assert "thumbnails_requeued" in recovered["output"], recovered
    wait_for_job(up["job"], timeout=30)
    rig.settle()
    job = job_row(up["job"])
    assert (job.state, job.attempts) == ("done", 1)
    assert [n for n in saves(LABEL) if n.startswith(f"photos/{stem}")] == []  # not re-saved
    assert sorted(r.spec for r in Thumbnail.objects.filter(source_name=job.saved_name)) == [
        "medium",
        "small",
    ]
    assert len(thumb_files(stem)) == 2


def test_full_disk_while_writing_thumbnails_leaves_no_partial_thumbnail(rig):
    stem, data = new_stem(), sized_jpeg(SMALL, seed=84)
    arm(LABEL, "enospc", count=99, match=f"thumbs/{stem}")
    rig.worker()
    [up] = rig.drive([rig.upload(stem, data)])
    job = wait_for_job(up["job"], timeout=60)
    if (job.state, job.error_code) != ("failed", "thumbnail_error"):
        raise ScenarioError(f"{job.state} {job.error_code}: {rig.logs()}")
    assert originals(stem) == [os.path.basename(job.saved_name)]
    assert thumb_files(stem) == [], "no partial thumbnail at its final name"


@BOTH
def test_frozen_broker_at_publish_durable_request_returns_within_2s(rig, broker):
    import subprocess

    stem = new_stem()
    pid = rig.server.proc.pid if broker == "redis" else rig.server.beam_pid
    # The send waits out the transport's socket timeout (10 s in these settings, ~4 s to
    # connect to RabbitMQ) on a pool thread; the driver waits for it before it reports.
    values = {"ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES": 0, "ASYNC_IMAGE_SAVE_DURABLE": True}
    os.kill(pid, signal.SIGSTOP)  # the server process is frozen: connections hang
    try:
        ups = drive(rig.env(**values), [rig.upload(stem, sized_jpeg(SMALL, seed=90))], timeout=40)
    except subprocess.TimeoutExpired:
        ups = None
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ups is not None, "the send did not give up within the socket timeout"
    assert ups[0]["elapsed"] < 2.0, ups  # the request itself never waited for the broker
    assert (ups[0]["state"], ups[0]["published"]) == ("pending", False)
