"""Request-side cost of ``save_image()`` against its baselines (a benchmark, not a test).

    .venv/bin/python benchmarks/request_cost.py [--quick] [--json PATH] [--profile SIZE]

See benchmarks/README.rst for what is measured and how to read the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery, shared_task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import jpeg_of_size, pg_admin, pg_params  # noqa: E402
from benchmarks.runmeta import finish, run_meta  # noqa: E402

RUN = uuid.uuid4().hex[:8]
PREFIX = f"ais-bench-{RUN}:"  # every Redis key this run makes starts with it
QUEUE = f"ais-bench-{RUN}"  # the only queue/exchange this run declares
KiB, MiB = 1024, 1024 * 1024
SIZES = {"100KB": 100 * KiB, "1MB": MiB, "5MB": 5 * MiB, "20MB": 20 * MiB}
ITERATIONS = {"100KB": 25, "1MB": 25, "5MB": 15, "20MB": 8}
QUICK_ITERATIONS = {"100KB": 7, "1MB": 7, "5MB": 5, "20MB": 3}
VARIANTS = ("floor", "save_image", "save_sync", "apply_async", "fs_sync", "s3_sync")
KINDS = ("memory", "tempfile")
TARGETS = "save_image <= 1.5x floor at >= 1MB, <= floor + 2 ms below; at 5MB <= 1/3 of s3_sync"


@shared_task(name="ais_bench.echo", ignore_result=True)
def echo(data: bytes) -> int:
    """Baseline task: a plain apply_async carrying the bytes inline (never run here)."""
    return len(data)


def configure_django(tmp: Path, db_name: str | None) -> None:
    """Configure settings for the PostgreSQL database ``db_name`` (or SQLite in ``tmp``)."""
    import django
    from django.conf import settings

    if db_name is None:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "bench.sqlite3")}
    else:
        database = {"ENGINE": "django.db.backends.postgresql", "NAME": db_name, **pg_params()}
    settings.configure(
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "async_image_save",
            "benchmarks",
        ],
        DATABASES={"default": database},
        MEDIA_ROOT=str(tmp / "media"),
        FILE_UPLOAD_TEMP_DIR=str(tmp),
        ASYNC_IMAGE_SAVE_QUEUE=QUEUE,
        ASYNC_IMAGE_SAVE_STAGING_PREFIX=PREFIX + "payload:",
        ASYNC_IMAGE_SAVE_STAGING_DIR=str(tmp / "staging"),
    )
    django.setup()


def make_celery(broker_url: str) -> Celery:
    """A Celery app for ``broker_url``, made current (save_image uses the current app)."""
    app = Celery(f"bench-{RUN}", set_as_current=True)
    app.conf.update(
        broker_url=broker_url,
        task_default_queue=QUEUE,
        accept_content=["json", "msgpack"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=(
            {"global_keyprefix": PREFIX} if broker_url.startswith("redis") else {}
        ),
    )
    app.set_default()
    return app


def make_upload(kind: str, data: bytes):
    """An upload as Django's handlers make it; a temporary file is written here, untimed."""
    from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile

    if kind == "memory":
        return InMemoryUploadedFile(
            io.BytesIO(data), "image", "photo.jpg", "image/jpeg", len(data), None
        )
    upload = TemporaryUploadedFile("photo.jpg", "image/jpeg", len(data), None)
    upload.write(data)
    upload.flush()
    upload.seek(0)
    return upload


class Bench:
    """The five variants for one broker, each returning an untimed cleanup callable."""

    def __init__(self, app: Celery, redis_url: str, fs_dir: Path, s3) -> None:
        import redis
        from django.core.files.storage import FileSystemStorage

        from benchmarks.models import Photo

        self.app, self.s3 = app, s3
        self.redis = redis.Redis.from_url(redis_url)
        self.fs = FileSystemStorage(location=str(fs_dir))
        self.photo = Photo.objects.create()
        self.paths: dict[str, str] = {}

    def floor(self, upload, label: str):
        """sha256 + one msgpack encode + one raw Redis SET of the upload's bytes."""
        import msgpack

        upload.seek(0)
        data = upload.read()
        digest = hashlib.sha256(data).hexdigest()
        packed = msgpack.packb({"name": upload.name, "sha256": digest, "data": data})
        self.redis.set(PREFIX + "floor", packed, ex=600)
        return lambda: self.redis.delete(PREFIX + "floor")

    def save_image(self, upload, label: str):
        """The real thing, outside a transaction: it commits, then hands the send to a thread.

        The cleanup (untimed) waits for that send, so it never overlaps the next timed call.
        """
        from async_image_save import save_image, wait_for_publishes

        job = save_image(upload, self.photo)
        self.paths[label] = "staged" if job.staged_ref else "inline"

        def cleanup() -> None:
            if not wait_for_publishes(timeout=30):
                raise RuntimeError("a background send did not finish in 30 s")
            self._delete_staged(job)

        return cleanup

    def save_sync(self, upload, label: str):
        """save_image with ``ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = False``: sent on return."""
        from django.conf import settings

        from async_image_save import save_image

        settings.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = False  # cheaper than override_settings
        try:
            job = save_image(upload, self.photo)
        finally:
            settings.ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND = True
        return lambda: self._delete_staged(job)

    @staticmethod
    def _delete_staged(job) -> None:
        from async_image_save.staging import resolve_ref

        if job.staged_ref:
            stager, key = resolve_ref(job.staged_ref)
            stager.delete(key)

    def apply_async(self, upload, label: str):
        """A plain apply_async with the bytes inline, msgpack-serialized."""
        upload.seek(0)
        echo.apply_async(args=(upload.read(),), serializer="msgpack", queue=QUEUE)
        return lambda: None

    def fs_sync(self, upload, label: str):
        """A synchronous save to FileSystemStorage (a temporary upload is moved, not copied)."""
        name = self.fs.save("photos/photo.jpg", upload)
        return lambda: self.fs.delete(name)

    def s3_sync(self, upload, label: str):
        """A synchronous save through django-storages' S3Storage to moto on loopback."""
        name = self.s3.save("photos/photo.jpg", upload)
        return lambda: self.s3.delete(name)

    def purge_queue(self) -> None:
        """Empty this run's own queue, so queued messages never pile up in the broker."""
        # Suppressed: the queue is not declared until something was published to it.
        with self.app.connection_for_write() as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_purge(QUEUE)

    def delete_own_keys_and_queue(self) -> None:
        """Delete this run's queue/exchange and every Redis key under this run's prefix."""
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            for call in (channel.queue_delete, channel.exchange_delete):
                try:
                    call(QUEUE)
                except Exception:
                    channel = conn.channel()  # AMQP closes a channel on error
        for key in self.redis.scan_iter(match=PREFIX + "*", count=1000):
            self.redis.delete(key)

    def run_cell(self, data: bytes, kind: str, label: str, n: int) -> dict[str, list[float]]:
        """``n`` timed iterations (after one warm-up), variant order rotating each time.

        The setup's objects are frozen out of the GC once per cell; a ``gc.collect()``
        before each call would evict the CPU caches and add ~0.4-2 ms to every variant.
        """
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        gc.collect()
        gc.freeze()
        for i in range(-1, n):
            shift = max(i, 0) % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                upload = make_upload(kind, data)
                start = time.perf_counter()
                cleanup = getattr(self, variant)(upload, f"{label}/{kind}")
                elapsed = time.perf_counter() - start
                cleanup()
                upload.close()
                if i >= 0:
                    samples[variant].append(elapsed * 1000)
            self.purge_queue()
        gc.unfreeze()
        return samples


def start_s3(tmp: Path):
    """Start ``moto_server`` on a free loopback port; return (process, S3Storage)."""
    import boto3
    from storages.backends.s3 import S3Storage

    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp / "moto.log", "wb")  # noqa: SIM115 - owned by the subprocess
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client(
                "s3", endpoint_url=endpoint, region_name="us-east-1", **creds
            ).create_bucket(Bucket="bench")
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto_server did not start; see {tmp / 'moto.log'}") from None
            time.sleep(0.2)
    storage = S3Storage(
        bucket_name="bench",
        endpoint_url=endpoint,
        region_name="us-east-1",
        access_key="bench",
        secret_key="bench",
    )
    return proc, storage


def verdict(label: str, med: dict[str, float]) -> str:
    """PASS/MISS against the issue's targets (printed, never asserted)."""
    misses = []
    big = SIZES[label] >= MiB
    if big and med["save_image"] > 1.5 * med["floor"]:
        misses.append("floor")
    if not big and med["save_image"] - med["floor"] > 2.0:
        misses.append("floor+2ms")
    if label == "5MB" and med["save_image"] > med["s3_sync"] / 3:
        misses.append("s3/3")
    return "PASS" if not misses else "MISS " + ",".join(misses)


def print_table(broker: str, url: str, result: dict, sizes: dict[str, int], paths: dict) -> None:
    """One table: medians in ms and the ratios the targets are stated in."""
    from async_image_save.staging import get_stager, inline_max_bytes

    print(
        f"\n== broker {broker} ({url}): payloads up to {inline_max_bytes()} B go inline, larger "
        f"are staged in {get_stager().scheme}; medians in ms =="
    )
    head = ("size", "bytes", "upload", "path", "n", *VARIANTS, "si/floor", "si/apply", "si/s3")
    fmt = "{:<6}{:>9} {:<9}{:<7}{:>3}" + "{:>12}" * len(VARIANTS) + "{:>9}{:>9}{:>7}  {}"
    print(fmt.format(*head, "target"))
    for label, kinds in result.items():
        for kind, samples in kinds.items():
            med = {v: statistics.median(s) for v, s in samples.items()}
            ratios = [med["save_image"] / med[v] for v in ("floor", "apply_async", "s3_sync")]
            row = [
                label,
                sizes[label],
                kind,
                paths.get(f"{label}/{kind}", "?"),
                len(samples["floor"]),
            ]
            row += [f"{med[v]:.2f}" for v in VARIANTS] + [f"{r:.2f}" for r in ratios]
            print(fmt.format(*row, verdict(label, med)))


def summarise(result: dict, paths: dict) -> dict:
    """Medians, ratios and target verdicts per size and upload kind, as the table prints them."""
    summary: dict = {}
    for label, kinds in result.items():
        for kind, samples in kinds.items():
            med = {v: statistics.median(s) for v, s in samples.items()}
            summary.setdefault(label, {})[kind] = {
                "n": len(samples["floor"]),
                "path": paths.get(f"{label}/{kind}", "?"),
                "median_ms": {v: round(m, 4) for v, m in med.items()},
                "si_floor": round(med["save_image"] / med["floor"], 4),
                "si_apply": round(med["save_image"] / med["apply_async"], 4),
                "si_s3": round(med["save_image"] / med["s3_sync"], 4),
                "target": verdict(label, med),
            }
    return summary


def profile(bench: Bench, data: bytes, calls: int = 20) -> None:
    """cProfile of ``calls`` save_image() calls with an in-memory upload."""
    import cProfile
    import pstats

    bench.run_cell(data, "memory", "warm", 1)
    prof = cProfile.Profile()
    for _ in range(calls):
        upload = make_upload("memory", data)
        prof.enable()
        cleanup = bench.save_image(upload, "profile")
        prof.disable()
        cleanup()
    bench.purge_queue()
    pstats.Stats(prof).sort_stats(os.environ.get("AIS_PROFILE_SORT", "cumulative")).print_stats(
        int(os.environ.get("AIS_PROFILE_LINES", "35"))
    )


def meta() -> dict:
    """Date, command line, versions and machine, for the JSON dump."""
    packages = ("Django", "celery", "kombu", "redis", "amqp", "psycopg", "msgpack", "moto")
    return run_meta(packages)  # date, command line, versions, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--json", metavar="PATH", help="dump run metadata, summary and raw samples (ms) as JSON"
    )
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated labels")
    parser.add_argument(
        "--profile", choices=SIZES, help="only cProfile 20 save_image calls (first broker)"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AIS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    args = parser.parse_args()
    urls = {"redis": args.redis_url, "rabbitmq": args.amqp_url}
    labels = [args.profile] if args.profile else args.sizes.split(",")
    brokers = args.brokers.split(",")[: 1 if args.profile else None]
    if not set(labels) <= set(SIZES) or not set(brokers) <= set(urls):
        parser.error(f"sizes are {', '.join(SIZES)}; brokers are redis, rabbitmq")
    tmp = Path(tempfile.mkdtemp(prefix="ais-bench-"))
    db_name = f"bench_ais_{RUN}" if args.db == "postgres" else None
    moto, report = None, {"run": RUN, "meta": meta(), "sizes": {}, "paths": {}, "samples": {}}
    report.update(quick=args.quick, db=args.db, summary={})
    if db_name:
        pg_admin(f'CREATE DATABASE "{db_name}"')
    try:
        configure_django(tmp, db_name)
        make_celery(urls["redis"])  # the system checks run by migrate look at the current app
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        moto, s3 = start_s3(tmp)
        inputs = {label: jpeg_of_size(SIZES[label]) for label in labels}
        report["sizes"] = {label: len(data) for label, data in inputs.items()}
        iterations = QUICK_ITERATIONS if args.quick else ITERATIONS
        for broker in brokers:
            bench = Bench(make_celery(urls[broker]), args.redis_url, tmp / "fs", s3)
            try:
                if args.profile:
                    return profile(bench, inputs[args.profile])
                result = report["samples"][broker] = {}
                for label, data in inputs.items():
                    result[label] = {
                        kind: bench.run_cell(data, kind, label, iterations[label]) for kind in KINDS
                    }
                report["paths"][broker] = bench.paths
                report["summary"][broker] = summarise(result, bench.paths)
                print_table(broker, urls[broker], result, report["sizes"], bench.paths)
            finally:
                bench.delete_own_keys_and_queue()
                bench.app.close()
        print(f"\ntargets: {TARGETS}")
        if args.json:
            finish(report["meta"])
            report["iterations"] = {label: iterations[label] for label in labels}
            report["targets"] = TARGETS
            for by_size in report["samples"].values():  # microsecond resolution is plenty
                for by_kind in by_size.values():
                    for samples in by_kind.values():
                        for variant, values in samples.items():
                            samples[variant] = [round(x, 3) for x in values]
            Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
        if db_name:
            from django.conf import settings
            from django.db import connections

            if settings.configured:
                connections.close_all()
            pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
