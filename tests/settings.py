"""Settings for the test suite: PostgreSQL, Redis broker, real worker processes.

Everything that names a server comes from the environment (``scripts/test``
sets it), so the suite never touches a database, key prefix or queue it did not
create itself.
"""

from __future__ import annotations

import os
import tempfile
import uuid

BASE_TMP = os.environ.get("AIS_TEST_TMP") or tempfile.mkdtemp(prefix="ais-tests-")
RUN_ID = os.environ.get("AIS_RUN_ID") or uuid.uuid4().hex[:10]

# AIS_SECRET_KEY / AIS_SECRET_KEY_FALLBACKS (comma-separated): a worker whose key differs
# from the web side's (tests/test_e2e_redis.py).
SECRET_KEY = os.environ.get("AIS_SECRET_KEY", "tests-only-not-secret")
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("AIS_SECRET_KEY_FALLBACKS", "").split(",") if k]
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "sorl.thumbnail",
    "rest_framework",
    "async_image_save",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("AIS_DB") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("AIS_SQLITE_PATH", os.path.join(BASE_TMP, "db.sqlite3")),
            "TEST": {
                "NAME": os.environ.get("AIS_SQLITE_PATH", os.path.join(BASE_TMP, "test.sqlite3"))
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("AIS_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AIS_PG_PORT", "5432"),
            "USER": os.environ.get("AIS_PG_USER", os.environ.get("USER", "postgres")),
            "PASSWORD": os.environ.get("AIS_PG_PASSWORD", ""),
            "NAME": os.environ.get("AIS_PG_DB", "test"),
            # A worker subprocess connects straight to the test database pytest made.
            "TEST": {"NAME": os.environ.get("AIS_PG_TEST_DB", f"test_ais_{RUN_ID}")},
        }
    }

MEDIA_ROOT = os.environ.get("AIS_MEDIA_ROOT", os.path.join(BASE_TMP, "media"))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"

CELERY_BROKER_URL = os.environ.get("AIS_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("AIS_QUEUE", f"ais-test-{RUN_ID}")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"ais-test-{RUN_ID}:",
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# sorl-thumbnail's own tag, with our queued backend (tests/test_sorl.py). Its
# key-value store caches misses, so web and workers must share that cache.
THUMBNAIL_BACKEND = "async_image_save.contrib.sorl.QueuedThumbnailBackend"
THUMBNAIL_DEBUG = False
THUMBNAIL_CACHE = "shared"
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": f"ais-test-{RUN_ID}",
    },
}

ASYNC_IMAGE_SAVE_STAGING_PREFIX = f"ais-test-{RUN_ID}:payload:"
ASYNC_IMAGE_SAVE_STAGING_DIR = os.path.join(BASE_TMP, "staging")
ASYNC_IMAGE_SAVE_RETRY_BACKOFF = 0.2
ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX = 1.0
ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES = 0

if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = os.environ.get("AIS_FS_BROKER_DIR", os.path.join(BASE_TMP, "broker"))
    for _sub in ("queue", "processed", "control"):
        os.makedirs(os.path.join(_broker_dir, _sub), exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": os.path.join(_broker_dir, "queue"),
        "data_folder_out": os.path.join(_broker_dir, "queue"),
        "processed_folder": os.path.join(_broker_dir, "processed"),
        "control_folder": os.path.join(_broker_dir, "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }

# --- S3 and a shared cache for QueuedStorage (tests/s3.py, tests/test_s3.py) ---
# The S3 server is moto on loopback, which tests/s3.py starts on this port. A
# worker subprocess gets these values through its environment, so it reaches
# the same server and bucket; without them a free port is picked here.


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


AIS_S3_ENDPOINT_URL = os.environ.get("AIS_S3_ENDPOINT_URL") or f"http://127.0.0.1:{_free_port()}"
AIS_S3_BUCKET = os.environ.get("AIS_S3_BUCKET") or f"ais-test-{RUN_ID}"
AIS_S3_ACCESS_KEY = os.environ.get("AIS_S3_ACCESS_KEY", "testing")
AIS_S3_SECRET_KEY = os.environ.get("AIS_S3_SECRET_KEY", "testing")
if os.environ.get("AIS_CACHE_URL"):  # a cache shared by test process and worker
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["AIS_CACHE_URL"],
            "KEY_PREFIX": f"ais-test-cache-{RUN_ID}",
        }
    }

# --- Fault and staging-matrix tests (tests/faults.py): per-process overrides -------------
# AIS_VISIBILITY_TIMEOUT: the Redis transport's visibility_timeout in seconds, with
# unacked messages swept every second (so a killed worker's task comes back quickly).
# AIS_SETTINGS_JSON: a JSON object of ASYNC_IMAGE_SAVE_* / CELERY_* settings for this
# process (a worker subprocess or a web-side driver); CELERY_BROKER_TRANSPORT_OPTIONS
# is merged into the options above instead of replacing them.
if os.environ.get("AIS_VISIBILITY_TIMEOUT"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": float(os.environ["AIS_VISIBILITY_TIMEOUT"]),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
if os.environ.get("AIS_SETTINGS_JSON"):
    import json as _json

    for _name, _value in _json.loads(os.environ["AIS_SETTINGS_JSON"]).items():
        if not _name.startswith(("ASYNC_IMAGE_SAVE_", "CELERY_")):
            raise ValueError(f"AIS_SETTINGS_JSON may only set ASYNC_IMAGE_SAVE_*/CELERY_*: {_name}")
        if _name == "CELERY_BROKER_TRANSPORT_OPTIONS":
            _value = {**CELERY_BROKER_TRANSPORT_OPTIONS, **_value}
        globals()[_name] = _value
# --- end of fault-test overrides ---------------------------------------------------------
