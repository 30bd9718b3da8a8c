"""Settings of the demo site: a photo gallery whose uploads are saved by a Celery worker.

The defaults need no servers at all (the "embedded default"): SQLite, kombu's
``filesystem://`` broker and ``FileSystemStorage``, all under ``demo/var/``.
Environment variables switch the pieces:

``DEMO_VAR_DIR``
    Where the SQLite database, the broker's folders, media and staged payloads
    live (default ``demo/var``).
``DEMO_DATABASE_URL``
    ``postgres://user:password@host:port/name`` or ``sqlite:///relative/path``,
    ``sqlite:////absolute/path`` (default: ``<DEMO_VAR_DIR>/db.sqlite3``).
``DEMO_BROKER_URL``
    ``redis://host:6379/0``, ``amqp://guest:guest@host:5672//`` (default
    ``filesystem://``, with its folders under ``<DEMO_VAR_DIR>/broker``).
``DEMO_S3_BUCKET``, ``DEMO_S3_ENDPOINT_URL``, ``DEMO_S3_REGION``
    Store media in S3 (or MinIO, moto...) through django-storages; credentials
    come from ``DEMO_S3_ACCESS_KEY_ID``/``DEMO_S3_SECRET_ACCESS_KEY`` or boto3's
    usual sources (``AWS_ACCESS_KEY_ID``...).

Never use these settings in production: the secret key is public and DEBUG is on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import django
from django.core.exceptions import ImproperlyConfigured

DEMO_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR") or DEMO_DIR / "var").resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret-do-not-deploy")
DEBUG = True
ALLOWED_HOSTS = [h for h in os.environ.get("DEMO_ALLOWED_HOSTS", "").split(",") if h]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "async_image_save",
    "gallery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


# ---------------------------------------------------------------------------
# Database: DEMO_DATABASE_URL, or SQLite in VAR_DIR
# ---------------------------------------------------------------------------


def sqlite_database(path: str | Path) -> dict[str, Any]:
    """SQLite shared by the web process and the worker: wait for locks, don't fail on them."""
    options: dict[str, Any] = {"timeout": 20}
    if django.VERSION >= (5, 1):
        # WAL lets the pages read while the worker writes; IMMEDIATE takes the
        # write lock up front instead of failing to upgrade a read lock.
        options.update(init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE")
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": options}


def database_from_url(url: str) -> dict[str, Any]:
    """Parse the two URL forms the demo supports: ``postgres://`` and ``sqlite://``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "demo",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
        }
    if scheme == "sqlite":
        # sqlite:///relative/to/demo, sqlite:////absolute/path (as dj-database-url reads them)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ImproperlyConfigured(f"DEMO_DATABASE_URL {url!r} names no SQLite file.")
        return sqlite_database(DEMO_DIR / path)
    raise ImproperlyConfigured(
        f"DEMO_DATABASE_URL {url!r}: use postgres://user:password@host:port/name or "
        "sqlite:///path (or leave it unset for SQLite in DEMO_VAR_DIR)."
    )


_database_url = os.environ.get("DEMO_DATABASE_URL", "")
DATABASES = {
    "default": database_from_url(_database_url)
    if _database_url
    else sqlite_database(VAR_DIR / "db.sqlite3")
}


# ---------------------------------------------------------------------------
# Files: FileSystemStorage in VAR_DIR/media, or S3 when DEMO_S3_BUCKET is set
# ---------------------------------------------------------------------------

STATIC_URL = "/static/"
MEDIA_URL = "/media/"
MEDIA_ROOT = str(VAR_DIR / "media")

S3_BUCKET = os.environ.get("DEMO_S3_BUCKET", "")
if S3_BUCKET:
    _s3_options: dict[str, Any] = {
        "bucket_name": S3_BUCKET,
        # Two uploads called photo.jpg must not overwrite each other.
        "file_overwrite": False,
    }
    for _option, _variable in (
        ("endpoint_url", "DEMO_S3_ENDPOINT_URL"),
        ("region_name", "DEMO_S3_REGION"),
        ("access_key", "DEMO_S3_ACCESS_KEY_ID"),
        ("secret_key", "DEMO_S3_SECRET_ACCESS_KEY"),
    ):
        if os.environ.get(_variable):
            _s3_options[_option] = os.environ[_variable]
    DEFAULT_STORAGE: dict[str, Any] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": _s3_options,
    }
else:
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}

STORAGES = {
    "default": DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


# ---------------------------------------------------------------------------
# Celery: DEMO_BROKER_URL, or kombu's filesystem:// transport in VAR_DIR/broker
# ---------------------------------------------------------------------------

CELERY_BROKER_URL = os.environ.get("DEMO_BROKER_URL") or "filesystem://"
CELERY_ACCEPT_CONTENT = ["json", "msgpack"]  # async_image_save's tasks travel as msgpack
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DEMO_QUEUE", "async-image-save-demo")
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A Redis that stops answering must fail the upload, not hang the request.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2}

if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # One folder for both directions: the web process writes, the worker reads.
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange bindings; kombu's default is "control" in the current directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }


# ---------------------------------------------------------------------------
# async_image_save
# ---------------------------------------------------------------------------

# Payloads too big to travel inside a message wait here (web and worker share it).
ASYNC_IMAGE_SAVE_STAGING_DIR = str(VAR_DIR / "staging")
ASYNC_IMAGE_SAVE_THUMBNAILS = {
    "gallery.Photo.image": {
        "small": {"size": (240, 240), "crop": "center"},
        "medium": {"size": (960, 960)},
    }
}
