"""The same happy path on other configurations, each with its own worker process.

* the embedded default: SQLite and kombu's ``filesystem://`` transport, no servers;
* RabbitMQ as broker (payloads travel inline in AMQP messages).

The "web" side runs in a subprocess too (``tests/scenario.py``), so that its
broker and database settings differ from the pytest process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from async_image_save.testing import WorkerProcess
from tests.conftest import FILES, ROOT, make_worker, noisy_jpeg, worker_env

pytestmark = pytest.mark.e2e


def run_scenario(env: dict[str, str], files: list[Path]) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.scenario", *map(str, files)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def assert_all_done(results: list[dict], worker: WorkerProcess) -> None:
    for item in results:
        assert item["state"] == "done", (item["error"], worker.log_tail())
        assert item["stored_sha256"] == item["upload_sha256"]
        assert set(item["thumbnails"]) == {"small", "medium"}


def sample_files(tmp_path: Path) -> list[Path]:
    big = tmp_path / "noisy.jpg"
    big.write_bytes(noisy_jpeg(600, 400))  # ~200 KB: staged on these brokers' defaults
    return [FILES / "tiny.png", big]


def test_embedded_default_sqlite_and_filesystem_broker(tmp_path):
    """No servers at all: what ``scripts/demo`` runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        AIS_DB="sqlite",
        AIS_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        AIS_BROKER_URL="filesystem://",
        AIS_FS_BROKER_DIR=str(tmp_path / "broker"),
        AIS_TEST_TMP=str(tmp_path),
        AIS_MEDIA_ROOT=str(tmp_path / "media"),
        AIS_QUEUE="embedded",
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    worker = make_worker(env, "embedded", tmp_path / "worker.log")
    worker.start()
    try:
        results = run_scenario(env, sample_files(tmp_path))
    finally:
        worker.stop()
    assert_all_done(results, worker)
    assert {r["vendor"] for r in results} == {"sqlite"}
    assert results[0]["staged_ref"] == ""
    assert results[1]["staged_ref"].startswith("directory:")
    assert not list((tmp_path / "staging").glob("*.payload"))  # staged bytes removed


@pytest.mark.django_db(transaction=True)
def test_rabbitmq_broker(tmp_path, rabbitmq_service, postgres_service):
    queue = f"ais-amqp-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        AIS_BROKER_URL=os.environ.get("AIS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        AIS_QUEUE=queue,
    )
    worker = make_worker(env, queue, tmp_path / "worker.log")
    worker.start()
    try:
        results = run_scenario(env, sample_files(tmp_path))
    finally:
        worker.stop()
        _delete_amqp_queue(env["AIS_BROKER_URL"], queue)
    assert_all_done(results, worker)
    assert {r["vendor"] for r in results} == {"postgresql"}
    assert [r["staged_ref"] for r in results] == ["", ""]  # AMQP carries both inline


def _delete_amqp_queue(url: str, queue: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        conn.default_channel.queue_delete(queue)
