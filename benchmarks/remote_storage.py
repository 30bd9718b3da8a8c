"""Remote storage: upload-view time and page-render time (a benchmark, not a test).

    .venv/bin/python benchmarks/remote_storage.py [--quick] [--db sqlite] [--json PATH]

Prints medians and ratios; asserts nothing. See benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import jpeg_of_size, pg_admin, pg_params  # noqa: E402
from benchmarks.runmeta import finish, run_meta  # noqa: E402

RUN = uuid.uuid4().hex[:8]
PREFIX = f"ais-bench-rs-{RUN}:"  # every Redis key this run makes starts with it
QUEUE = f"ais-bench-rs-{RUN}"  # the only queue this run publishes to
BUCKET = f"ais-bench-{RUN}"
UPLOAD_VARIANTS = ("s3_sync", "queued", "save_image", "fs_sync")
PAGE_VARIANTS = ("s3_records", "queued_cache", "queued_nocache", "s3_exists")
PAGE_SIZE = 50
PACKAGES = ("Django", "celery", "django-storages", "boto3", "moto", "psycopg", "redis")


def configure(tmp: Path, db_name: str | None, endpoint: str, redis_url: str) -> None:
    import django
    from django.conf import settings

    if db_name is None:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "bench.sqlite3")}
    else:
        database = {"ENGINE": "django.db.backends.postgresql", "NAME": db_name, **pg_params()}
    fs = "django.core.files.storage.FileSystemStorage"
    settings.configure(
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.staticfiles",
            "async_image_save",
            "benchmarks",
        ],
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        DATABASES={"default": database},
        MEDIA_ROOT=str(tmp / "media"),
        MEDIA_URL="/media/",
        STATIC_URL="/static/",
        FILE_UPLOAD_TEMP_DIR=str(tmp),
        STORAGES={
            "default": {"BACKEND": fs},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            "local": {"BACKEND": fs, "OPTIONS": {"location": str(tmp / "local")}},
            "s3": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": BUCKET,
                    "endpoint_url": endpoint,
                    "region_name": "us-east-1",
                    "access_key": "bench",
                    "secret_key": "bench",
                },
            },
            "queued": {
                "BACKEND": "async_image_save.storage.QueuedStorage",
                "OPTIONS": {"local": "local", "remote": "s3"},
            },
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "none": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        },
        ASYNC_IMAGE_SAVE_QUEUE=QUEUE,
        ASYNC_IMAGE_SAVE_STAGING_PREFIX=PREFIX + "payload:",
        ASYNC_IMAGE_SAVE_STAGING_DIR=str(tmp / "staging"),
        ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS={"small": {"size": (200, 200)}},
    )
    django.setup()
    from celery import Celery

    app = Celery(f"bench-{RUN}", set_as_current=True)
    app.conf.update(
        broker_url=redis_url,
        task_default_queue=QUEUE,
        accept_content=["json", "msgpack"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": PREFIX},
    )
    app.set_default()


def define_models() -> dict[str, type]:
    """Models whose fields use the storages under test (tables made by ``--run-syncdb``)."""
    from django.core.files.storage import storages
    from django.db import models

    def s3():
        return storages["s3"]

    def queued():
        return storages["queued"]

    def local():
        return storages["local"]

    made = {}
    for label, factory in (("S3", s3), ("Queued", queued), ("Local", local)):
        made[label] = type(
            f"{label}BenchPhoto",
            (models.Model,),
            {
                "__module__": __name__,
                "image": models.ImageField(upload_to="photos", storage=factory),
                "Meta": type("Meta", (), {"app_label": "benchmarks"}),
            },
        )
    return made


MODELS: dict[str, type] = {}


def upload_view(request, variant: str):
    """The view under test: one upload, saved the way ``variant`` says."""
    from django.http import HttpResponse

    from async_image_save import save_image

    image = request.FILES["image"]
    if variant == "save_image":
        save_image(image, MODELS["S3"].objects.create())
    else:
        model = {"s3_sync": "S3", "queued": "Queued", "fs_sync": "Local"}[variant]
        MODELS[model].objects.create(image=image)
    return HttpResponse(status=201)


def _urlpatterns():
    from django.urls import path

    return [path("upload/<str:variant>/", upload_view)]


def __getattr__(name: str):  # ROOT_URLCONF is this module; build the URLs after setup
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def cleanup_uploads(redis_client) -> None:
    """Remove everything the upload variants left behind (untimed).

    First wait for the sends the views handed to the background, so none of
    them overlaps the next timed request.
    """
    from async_image_save import wait_for_publishes
    from async_image_save.models import ImageJob, QueuedFile

    if not wait_for_publishes(timeout=30):
        raise RuntimeError("a background send did not finish in 30 s")
    for model in MODELS.values():
        for photo in model.objects.exclude(image=""):
            photo.image.storage.delete(photo.image.name)  # QueuedStorage: row and both copies
        model.objects.all().delete()
    QueuedFile.objects.all().delete()
    ImageJob.objects.all().delete()
    for key in redis_client.scan_iter(match=PREFIX + "payload:*", count=1000):
        redis_client.delete(key)
    with contextlib.suppress(Exception):  # the queue exists only once something was sent
        from celery import current_app

        with current_app.connection_for_write() as conn:
            conn.default_channel.queue_purge(QUEUE)


def bench_uploads(data: bytes, n: int, redis_client) -> dict[str, list[float]]:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    body = encode_multipart(
        BOUNDARY, {"image": SimpleUploadedFile("photo.jpg", data, "image/jpeg")}
    )
    client = Client()
    samples: dict[str, list[float]] = {v: [] for v in UPLOAD_VARIANTS}
    for i in range(-1, n):  # one untimed warm-up round
        shift = max(i, 0) % len(UPLOAD_VARIANTS)
        for variant in UPLOAD_VARIANTS[shift:] + UPLOAD_VARIANTS[:shift]:
            start = time.perf_counter()
            response = client.generic(
                "POST", f"/upload/{variant}/", body, content_type=MULTIPART_CONTENT
            )
            elapsed = (time.perf_counter() - start) * 1000
            assert response.status_code == 201, response.content
            cleanup_uploads(redis_client)
            if i >= 0:
                samples[variant].append(elapsed)
    return samples


def make_page(moto) -> dict[str, list]:
    """50 photos with thumbnails on S3, and 50 on QueuedStorage after their transfers."""
    from django.core.files.base import ContentFile

    from async_image_save.models import QueuedFile
    from async_image_save.thumbnails import generate_thumbnails

    small = jpeg_of_size(20_000)
    pages: dict[str, list] = {"S3": [], "Queued": []}
    for label in pages:
        for i in range(PAGE_SIZE):
            photo = MODELS[label].objects.create()
            photo.image.save(f"page{i}.jpg", ContentFile(small), save=True)
            generate_thumbnails(photo, "image")
            pages[label].append(photo.pk)
    storage = MODELS["Queued"]._meta.get_field("image").storage
    for row in QueuedFile.objects.all():
        storage.transfer(row.name)  # what the worker does, here in-process
    return {label: list(MODELS[label].objects.filter(pk__in=pks)) for label, pks in pages.items()}


def bench_page(moto, n: int) -> tuple[dict[str, list[float]], dict[str, tuple[int, int]]]:
    from django.db import connection
    from django.template import Context, Template
    from django.test.utils import CaptureQueriesContext, override_settings

    from async_image_save.thumbnails import field_specs, thumbnail_name

    page = make_page(moto)
    ours = Template(
        '{% load async_image_save %}{% for p in photos %}{% thumbnail_img p.image "small" %}'
        "{% endfor %}"
    )
    naive = Template(
        '{% for t in thumbs %}<img src="{{ t.url }}" width="200" height="150">{% endfor %}'
    )
    spec = field_specs(page["S3"][0], "image")[0]

    def s3_exists():  # no metadata: ask the storage whether each thumbnail is there
        thumbs = []
        for photo in page["S3"]:
            name = thumbnail_name(photo.image.name, spec, "jpg")
            storage = photo.image.storage
            thumbs.append({"url": storage.url(name) if storage.exists(name) else ""})
        return naive.render(Context({"thumbs": thumbs}))

    renders = {
        "s3_records": lambda: ours.render(Context({"photos": page["S3"]})),
        "queued_cache": lambda: ours.render(Context({"photos": page["Queued"]})),
        "queued_nocache": lambda: ours.render(Context({"photos": page["Queued"]})),
        "s3_exists": s3_exists,
    }
    samples: dict[str, list[float]] = {v: [] for v in PAGE_VARIANTS}
    costs: dict[str, tuple[int, int]] = {}
    for i in range(-1, n):
        for variant in PAGE_VARIANTS:
            cache = "none" if variant == "queued_nocache" else "default"
            with override_settings(ASYNC_IMAGE_SAVE_STORAGE_CACHE=cache):
                before = moto.settled_requests(quiet=0.05) if i == 0 else 0
                with CaptureQueriesContext(connection) as queries:
                    start = time.perf_counter()
                    html = renders[variant]()
                    elapsed = (time.perf_counter() - start) * 1000
                assert html.count('src="http') == PAGE_SIZE, html[:300]
                if i == 0:
                    costs[variant] = (moto.settled_requests(quiet=0.05) - before, len(queries))
            if i >= 0:
                samples[variant].append(elapsed)
    return samples, costs


def print_tables(size: int, uploads, pages, costs) -> None:
    med = {v: statistics.median(s) for v, s in uploads.items()}
    n = len(uploads["s3_sync"])
    print(f"\n== upload view, one {size:,} B JPEG (POST multipart, n={n}); medians in ms ==")
    print(f"{'variant':<12}{'median':>10}{'vs s3_sync':>12}")
    for variant in UPLOAD_VARIANTS:
        print(f"{variant:<12}{med[variant]:>10.1f}{med[variant] / med['s3_sync']:>12.2f}")
    med = {v: statistics.median(s) for v, s in pages.items()}
    n = len(pages["s3_records"])
    print(f"\n== render {PAGE_SIZE} thumbnails (n={n}); medians in ms ==")
    head = ("variant", "median", "vs s3_records", "S3 requests", "SQL queries")
    print("{:<16}{:>10}{:>15}{:>13}{:>13}".format(*head))
    for variant in PAGE_VARIANTS:
        ratio = med[variant] / med["s3_records"]
        requests, queries = costs[variant]
        print(f"{variant:<16}{med[variant]:>10.1f}{ratio:>15.2f}{requests:>13}{queries:>13}")


def json_report(meta: dict, args, size: int, uploads, pages, costs) -> dict:
    """What ``--json`` writes: run metadata, medians, ratios and the raw samples (ms)."""
    up = {v: statistics.median(s) for v, s in uploads.items()}
    pg = {v: statistics.median(s) for v, s in pages.items()}
    return {
        "meta": finish(meta),
        "quick": args.quick,
        "db": args.db,
        "size": size,
        "page_size": PAGE_SIZE,
        "upload": {
            v: {
                "median_ms": round(up[v], 3),
                "vs_s3_sync": round(up[v] / up["s3_sync"], 4),
                "samples": [round(x, 3) for x in uploads[v]],
            }
            for v in UPLOAD_VARIANTS
        },
        "page": {
            v: {
                "median_ms": round(pg[v], 3),
                "vs_s3_records": round(pg[v] / pg["s3_records"], 4),
                "s3_requests": costs[v][0],
                "sql_queries": costs[v][1],
                "samples": [round(x, 3) for x in pages[v]],
            }
            for v in PAGE_VARIANTS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--size", type=int, default=5 * 1024 * 1024, help="upload bytes (5 MiB)")
    parser.add_argument("--json", metavar="PATH", help="also write metadata, medians and samples")
    parser.add_argument(
        "--redis-url", default=os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    meta = run_meta(PACKAGES)
    import redis

    from tests.s3 import MotoServer

    tmp = Path(tempfile.mkdtemp(prefix="ais-bench-rs-"))
    db_name = f"bench_ais_rs_{RUN}" if args.db == "postgres" else None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = MotoServer(port, tmp / "moto.log", "bench", "bench")
    redis_client = redis.Redis.from_url(args.redis_url)
    if db_name:
        pg_admin(f'CREATE DATABASE "{db_name}"')
    try:
        moto.start()
        moto.create_bucket(BUCKET)
        configure(tmp, db_name, moto.endpoint_url, args.redis_url)
        MODELS.update(define_models())
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        data = jpeg_of_size(args.size)
        uploads = bench_uploads(data, 5 if args.quick else 15, redis_client)
        pages, costs = bench_page(moto, 5 if args.quick else 20)
        print_tables(len(data), uploads, pages, costs)
        if args.json:
            report = json_report(meta, args, len(data), uploads, pages, costs)
            Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        moto.stop()
        for key in redis_client.scan_iter(match=PREFIX + "*", count=1000):
            redis_client.delete(key)
        if db_name:
            from django.conf import settings
            from django.db import connections

            if settings.configured:
                connections.close_all()
            pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
