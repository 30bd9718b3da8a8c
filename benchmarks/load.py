"""Load: thousands of uploads of mixed sizes through two real workers, then integrity checks.

    .venv/bin/python benchmarks/load.py                 # 2,000 uploads
    .venv/bin/python benchmarks/load.py --quick         # 200 uploads
    .venv/bin/python benchmarks/load.py --uploads 500 --staging database

Starts its own redis-server (broker and staging, free loopback port), a throwaway
PostgreSQL database on the server the tests use (``AIS_PG_*``), two Celery
worker processes (solo pool) and enqueues the uploads with ``save_image()``
from this process. Prints throughput, time to done, peak memory per worker,
then PASS/FAIL lines; exits 1 if a check fails. See benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import pg_admin, pg_params  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
#: (label, target size in bytes or None for a non-image, share of the uploads)
MIX = [("100KB", 100 * KiB, 0.60), ("1MB", MiB, 0.30), ("5MB", 5 * MiB, 0.09), ("bad", None, 0.01)]
VARIANTS = 4  # distinct images per size class


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of process ``pid`` (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plan(uploads: int, seed: int = 7) -> list[str]:
    """The size class of every upload, shuffled (exact shares, rounded)."""
    labels: list[str] = []
    for label, _size, share in MIX:
        labels += [label] * round(uploads * share)
    labels = (labels + [MIX[0][0]] * uploads)[:uploads]
    random.Random(seed).shuffle(labels)
    return labels


def make_inputs() -> dict[str, list[bytes]]:
    from tests.faults import sized_jpeg

    inputs: dict[str, list[bytes]] = {}
    for n, (label, size, _share) in enumerate(MIX):
        if size is None:
            inputs[label] = [b"this is not an image " * 500]
        else:
            inputs[label] = [sized_jpeg(size, seed=100 * n + i) for i in range(VARIANTS)]
    return inputs


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ais-load-"))
        self.run_id = uuid.uuid4().hex[:10]
        self.db = f"ais_load_{self.run_id}"
        self.queue = f"ais-load-{self.run_id}"
        self.redis = None
        self.workers: list = []  # async_image_save.testing.WorkerProcess
        self.db_created = False
        self.saved_at: dict = {}
        self.watch_error: BaseException | None = None

    # --- setup -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            AIS_TEST_TMP=str(self.tmp),
            AIS_RUN_ID=self.run_id,
            AIS_MEDIA_ROOT=str(self.tmp / "media"),
            AIS_QUEUE=self.queue,
            AIS_BROKER_URL=self.redis.url,
            AIS_REDIS_URL=self.redis.url,
            AIS_PG_DB=self.db,
            AIS_PG_HOST=pg_params()["HOST"],
            AIS_PG_PORT=pg_params()["PORT"],
            AIS_PG_USER=pg_params()["USER"],
        )
        if self.args.staging:
            env["AIS_SETTINGS_JSON"] = json.dumps(
                {
                    "ASYNC_IMAGE_SAVE_STAGING": self.args.staging,
                    "ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES": 0,
                }
            )
        return env

    def setup(self) -> None:
        from tests.faults import RedisServer

        self.redis = RedisServer(self.tmp / "redis")
        self.redis.start()
        pg_admin(f'CREATE DATABASE "{self.db}"')
        self.db_created = True
        os.environ.update(self.env())
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def start_workers(self) -> None:
        from async_image_save.testing import WorkerProcess

        for n in range(self.args.workers):
            worker = WorkerProcess(
                "tests.celery_app",
                self.queue,
                self.env(),
                log_path=self.tmp / f"worker-{n}.log",
                cwd=ROOT,
                name=f"load{n}-{self.run_id}",
            )
            worker.start()
            self.workers.append(worker)

    # --- the run ---------------------------------------------------------------------------

    def enqueue(self, labels: list[str], inputs: dict[str, list[bytes]]) -> list[tuple]:
        from django.core.files.uploadedfile import SimpleUploadedFile

        from async_image_save import save_image
        from tests.models import Photo

        sent = []
        for n, label in enumerate(labels):
            data = inputs[label][n % len(inputs[label])]
            photo = Photo.objects.create(title=f"load {n}")
            upload = SimpleUploadedFile(f"u{n:05d}-{label}.jpg", data, "image/jpeg")
            job = save_image(upload, photo)
            sent.append((job.pk, photo.pk, label, hashlib.sha256(data).hexdigest()))
        return sent

    def watch(self, expected: int, timeout: float) -> None:
        """Poll (in a thread, while uploads are enqueued) until ``expected`` jobs ended.

        Records when each job is first seen with its file bound (``saved`` or ``done``).
        """
        from datetime import timedelta

        from django.db import connection
        from django.utils import timezone

        from async_image_save.models import ImageJob

        try:
            deadline = time.monotonic() + timeout
            since = None  # the database is this run's own: every job in it is ours
            while True:
                now = timezone.now()
                bound = ImageJob.objects.filter(state__in=("saved", "done"))
                if since is not None:
                    bound = bound.filter(updated_at__gte=since)
                for pk in bound.values_list("pk", flat=True):
                    self.saved_at.setdefault(pk, now)
                since = now - timedelta(seconds=1)
                left = ImageJob.objects.filter(state__in=("pending", "saved")).count()
                if not left and ImageJob.objects.count() == expected:
                    return
                for worker in self.workers:
                    if worker.proc.poll() is not None:
                        code = worker.proc.returncode
                        raise RuntimeError(f"a worker exited ({code}); see {self.tmp}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} jobs unfinished after {timeout:.0f} s")
                time.sleep(0.25)
        except BaseException as exc:
            self.watch_error = exc
        finally:
            connection.close()

    def report(self, sent: list[tuple], enqueue_s: float) -> bool:
        from django.core.files.storage import default_storage

        from async_image_save.models import ImageJob, StagedPayload, Thumbnail
        from async_image_save.staging import get_stager
        from tests.models import Photo

        jobs = {j.pk: j for j in ImageJob.objects.filter(pk__in=[s[0] for s in sent])}
        done = [j for j in jobs.values() if j.state == "done"]
        failed = [j for j in jobs.values() if j.state == "failed"]
        start = min(j.created_at for j in jobs.values())
        end = max(j.updated_at for j in jobs.values())
        to_done = [(j.updated_at - j.created_at).total_seconds() for j in done]
        counts = Counter(s[2] for s in sent)
        mix = ", ".join(f"{counts[label]} x {label}" for label, _s, _w in MIX)
        peaks = [vm_hwm_mib(w.proc.pid) for w in self.workers]
        span = (end - start).total_seconds()

        print(
            f"async_image_save load: {len(sent)} uploads ({mix}); {len(self.workers)} workers "
            f"(solo pool); own redis-server (broker + staging); PostgreSQL database {self.db}"
        )
        staging = self.args.staging or "per-broker default (redis above 16 KiB)"
        print(f"staging: {staging}; thumbnails: small + medium for each upload")
        print(f"enqueue: {len(sent)} save_image() calls in {enqueue_s:.1f} s")
        print(
            f"throughput: {len(jobs) / span:.1f} uploads/s "
            f"({len(done)} done, {len(failed)} failed; first enqueue to last done {span:.1f} s)"
        )
        if to_done:
            print(
                f"time to done: p50 {statistics.median(to_done):.2f} s, "
                f"p99 {percentile(to_done, 0.99):.2f} s, max {max(to_done):.2f} s "
                "(from save_image() to done; all uploads are enqueued in one burst)"
            )
        to_saved = [(self.saved_at[j.pk] - j.created_at).total_seconds() for j in done]
        if to_saved:
            print(
                f"time to saved (file bound, polled every 0.25 s): p50 "
                f"{statistics.median(to_saved):.2f} s, p99 {percentile(to_saved, 0.99):.2f} s "
                "(the thumbnail task queues behind the uploads still waiting)"
            )
        print("peak RSS per worker: " + ", ".join(f"{p:.0f} MiB" for p in peaks))

        results = []

        def check(ok: bool, what: str, detail: str) -> None:
            results.append(ok)
            print(f"{'PASS' if ok else 'FAIL'} {what}: {detail}")

        unreasoned = [j for j in failed if not (j.error_code and j.error)]
        unfinished = [j for j in jobs.values() if j.state not in ("done", "failed")]
        codes = Counter(j.error_code for j in failed)
        check(
            not unreasoned and not unfinished and len(jobs) == len(sent),
            "every job done or failed with a reason",
            f"{len(done)} done, {len(failed)} failed {dict(codes)}, "
            f"{len(unfinished)} unfinished, {len(unreasoned)} failed without a reason",
        )

        photos = {p.pk: p for p in Photo.objects.filter(pk__in=[s[1] for s in sent])}
        problems = []
        names = Counter()
        for job_id, photo_pk, label, digest in sent:
            job, photo = jobs[job_id], photos[photo_pk]
            if job.state != "done":
                if label != "bad" or photo.image:
                    problems.append(f"{job_id}: {job.state} {job.error_code} ({label})")
                continue
            names[photo.image.name] += 1
            if photo.image.name != job.saved_name:
                problems.append(f"{job_id}: field {photo.image.name!r} != {job.saved_name!r}")
                continue
            with default_storage.open(photo.image.name, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != digest:
                    problems.append(f"{job_id}: stored bytes differ")
            if Thumbnail.objects.filter(source_name=photo.image.name).count() != 2:
                problems.append(f"{job_id}: not 2 thumbnails")
        problems += [f"{name} bound {n} times" for name, n in names.items() if n > 1]
        check(
            not problems,
            "every file present once",
            f"{len(names)} originals bound once each, bytes verified, 2 thumbnails each"
            + (f"; {len(problems)} problems, e.g. {problems[:3]}" if problems else ""),
        )

        redis_keys = sum(1 for _ in self.redis_client().scan_iter(match="*payload:*"))
        rows = StagedPayload.objects.count()
        directory = get_stager("directory")
        dir_files = len(list(directory.keys()))
        storage_files = len(list(get_stager("storage").keys()))
        check(
            redis_keys == rows == dir_files == storage_files == 0,
            "no staged bytes left",
            f"redis keys {redis_keys}, database rows {rows}, directory files {dir_files}, "
            f"storage files {storage_files}",
        )

        media = Path(default_storage.location)
        on_disk = {str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()}
        referenced = {p.image.name for p in photos.values() if p.image}
        referenced |= set(Thumbnail.objects.values_list("name", flat=True))
        orphans = sorted(on_disk - referenced)
        missing = sorted(referenced - on_disk)
        check(
            not orphans and not missing,
            "no orphan files in the storage",
            f"{len(on_disk)} files, {len(referenced)} referenced, {len(orphans)} orphans "
            f"{orphans[:3]}, {len(missing)} missing {missing[:3]}",
        )
        return all(results)

    def redis_client(self):
        import redis

        return redis.Redis.from_url(self.redis.url)

    # --- teardown --------------------------------------------------------------------------

    def cleanup(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=30)
        if self.db_created:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:
                pass
            pg_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        if self.redis is not None:
            self.redis.stop()
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 uploads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--staging", choices=["redis", "directory", "database", "storage"], default=None
    )
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for done")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, media)")
    args = parser.parse_args()
    uploads = 200 if args.quick else args.uploads
    labels = plan(uploads)
    print(f"generating inputs ({VARIANTS} per size class)...", file=sys.stderr)
    inputs = make_inputs()
    run = Run(args)
    try:
        run.setup()
        run.start_workers()
        print(f"enqueueing {uploads} uploads...", file=sys.stderr)
        watcher = threading.Thread(target=run.watch, args=(uploads, args.timeout), daemon=True)
        watcher.start()
        started = time.monotonic()
        sent = run.enqueue(labels, inputs)
        enqueue_s = time.monotonic() - started
        watcher.join()
        if run.watch_error is not None:
            raise run.watch_error
        ok = run.report(sent, enqueue_s)
    finally:
        run.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
