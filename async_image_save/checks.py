"""System checks for the ``ASYNC_IMAGE_SAVE_*`` settings and the Celery app.

Ids: ``async_image_save.E001``... errors, ``async_image_save.W001``... warnings.
Each message says what is wrong and how to fix it. They carry the tag
``async_image_save`` (``manage.py check --tag async_image_save``), and a Celery
worker logs them when it starts (:func:`report_at_worker_start`), since
``celery worker`` does not run Django's checks.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from async_image_save.conf import Settings, conf
from async_image_save.specs import ThumbnailSpec

logger = logging.getLogger("async_image_save")


def _int_setting(
    name: str, value: Any, *, minimum: int, error_id: str
) -> list[checks.CheckMessage]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [
            checks.Error(
                f"{name} must be an integer of at least {minimum}, got {value!r}.",
                hint=f"Set {name} to a number of bytes/seconds, or remove it to use the default.",
                id=error_id,
            )
        ]
    return []


#: The tag of every check here.
TAG = "async_image_save"

#: The settings that are switches (typed ``-> bool`` in ``conf.Settings``):
#: anything but True or False is a mistake.
FLAG_SETTINGS = tuple(
    name
    for name, attribute in vars(Settings).items()
    if isinstance(attribute, property) and attribute.fget.__annotations__.get("return") == "bool"
)


@checks.register(TAG)
def check_flags(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E019: a switch set to something other than True or False (often a str from the env)."""
    errors: list[checks.CheckMessage] = []
    for name in FLAG_SETTINGS:
        value = getattr(settings, name, None)
        if value is None or isinstance(value, bool):
            continue
        errors.append(
            checks.Error(
                f"{name} must be True or False, got {value!r} ({type(value).__name__}).",
                hint=f"A string such as 'False' counts as true. Convert it, e.g. "
                f"{name} = os.environ.get({name!r}) == '1'.",
                id="async_image_save.E019",
            )
        )
    return errors


@checks.register(TAG)
def check_serializer(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: unknown codec; E002: pickle without opt-in; W001: pickle accepted."""
    errors: list[checks.CheckMessage] = []
    codec = conf.ASYNC_IMAGE_SAVE_SERIALIZER
    if codec not in ("msgpack", "pickle"):
        errors.append(
            checks.Error(
                f"ASYNC_IMAGE_SAVE_SERIALIZER is {codec!r}.",
                hint="Use 'msgpack' (the default) or, with ASYNC_IMAGE_SAVE_ALLOW_PICKLE, "
                "'pickle'.",
                id="async_image_save.E001",
            )
        )
    if codec == "pickle" and not conf.ASYNC_IMAGE_SAVE_ALLOW_PICKLE:
        errors.append(
            checks.Error(
                "ASYNC_IMAGE_SAVE_SERIALIZER is 'pickle' but ASYNC_IMAGE_SAVE_ALLOW_PICKLE is off, "
                "so workers would refuse every payload.",
                hint="Keep 'msgpack', or set ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True on web "
                "and workers.",
                id="async_image_save.E002",
            )
        )
    if conf.ASYNC_IMAGE_SAVE_ALLOW_PICKLE:
        errors.append(
            checks.Warning(
                "ASYNC_IMAGE_SAVE_ALLOW_PICKLE is on: a pickle payload can run code on a worker "
                "if anyone else can write to the broker or the staging store.",
                hint="Leave it off unless broker and staging are private to this project; "
                "msgpack is as fast for image payloads.",
                id="async_image_save.W001",
            )
        )
    return errors


@checks.register(TAG)
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E003-E006, E012, E013, E015, E016: sizes, TTL, retries, attempts and lease."""
    errors = _int_setting(
        "ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES",
        conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES,
        minimum=1,
        error_id="async_image_save.E003",
    )
    inline = conf.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES
    if inline is not None:
        errors += _int_setting(
            "ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES", inline, minimum=0, error_id="async_image_save.E004"
        )
    errors += _int_setting(
        "ASYNC_IMAGE_SAVE_STAGING_TTL",
        conf.ASYNC_IMAGE_SAVE_STAGING_TTL,
        minimum=60,
        error_id="async_image_save.E005",
    )
    errors += _int_setting(
        "ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES",
        conf.ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES,
        minimum=0,
        error_id="async_image_save.E012",
    )
    errors += _int_setting(
        "ASYNC_IMAGE_SAVE_MAX_ATTEMPTS",
        conf.ASYNC_IMAGE_SAVE_MAX_ATTEMPTS,
        minimum=1,
        error_id="async_image_save.E015",
    )
    errors += _int_setting(
        "ASYNC_IMAGE_SAVE_LEASE_SECONDS",
        conf.ASYNC_IMAGE_SAVE_LEASE_SECONDS,
        minimum=10,
        error_id="async_image_save.E016",
    )
    for name in ("ASYNC_IMAGE_SAVE_RETRY_BACKOFF", "ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX"):
        value = getattr(conf, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(
                checks.Error(
                    f"{name} must be a number of seconds (0 or more), got {value!r}.",
                    hint=f"Set {name} to e.g. 2, or remove it to use the default.",
                    id="async_image_save.E013",
                )
            )
    errors += _int_setting(
        "ASYNC_IMAGE_SAVE_MAX_RETRIES",
        conf.ASYNC_IMAGE_SAVE_MAX_RETRIES,
        minimum=0,
        error_id="async_image_save.E006",
    )
    return errors


@checks.register(TAG)
def check_staging(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E007: unknown staging backend or a Redis staging without a Redis URL."""
    from async_image_save.staging import get_stager

    try:
        get_stager()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="See the 'staging' section of the settings documentation.",
                id="async_image_save.E007",
            )
        ]
    return []


@checks.register(TAG)
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E008: the Celery app would refuse msgpack messages; W003: Redis broker without timeouts."""
    from celery import current_app

    messages: list[checks.CheckMessage] = []
    broker = str(current_app.conf.broker_url or "")
    options = current_app.conf.broker_transport_options or {}
    if broker.startswith(("redis://", "rediss://")) and "socket_timeout" not in options:
        messages.append(
            checks.Warning(
                "The Celery broker is Redis without a socket_timeout: if Redis stops "
                "answering (but keeps the connection), publishing hangs: the background "
                "sends, then the requests once they send for themselves.",
                hint='Set CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, '
                '"socket_connect_timeout": 2} (and keep your visibility_timeout).',
                id="async_image_save.W003",
            )
        )
    accepted = current_app.conf.accept_content or []
    if "msgpack" in accepted or "application/x-msgpack" in accepted:
        return messages
    return messages + [
        checks.Error(
            f"The Celery app accepts {list(accepted)}, not msgpack, so workers would reject "
            "every async_image_save message.",
            hint='Add "msgpack" to CELERY_ACCEPT_CONTENT, e.g. ["json", "msgpack"]; '
            "your other tasks keep their serializer. If you did, make sure your project's "
            "__init__.py imports its Celery app so that it is the current app.",
            id="async_image_save.E008",
        )
    ]


@checks.register(TAG)
def check_thumbnail_specs(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E009: a thumbnail spec is malformed; E010: its format is not supported by Pillow."""
    from PIL import features

    errors: list[checks.CheckMessage] = []
    groups: dict[str, Any] = {
        "ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS": conf.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS
    }
    per_field = conf.ASYNC_IMAGE_SAVE_THUMBNAILS
    if not isinstance(per_field, dict):
        per_field = {"(not a dict)": per_field}
    for key, specs in per_field.items():
        groups[f"ASYNC_IMAGE_SAVE_THUMBNAILS[{key!r}]"] = specs
    for where, specs in groups.items():
        if not isinstance(specs, dict):
            errors.append(
                checks.Error(
                    f"{where} must map spec names to option dicts, got {specs!r}.",
                    id="async_image_save.E009",
                )
            )
            continue
        for name, options in specs.items():
            try:
                spec = ThumbnailSpec.from_options(name, options)
            except ImproperlyConfigured as exc:
                errors.append(checks.Error(f"{where}: {exc}", id="async_image_save.E009"))
                continue
            if spec.format in ("webp", "avif") and not features.check(spec.format):
                errors.append(
                    checks.Error(
                        f"{where}: spec {name!r} asks for {spec.format.upper()}, which this "
                        "Pillow build cannot write.",
                        hint="Install a Pillow wheel with that codec or choose another format.",
                        id="async_image_save.E010",
                    )
                )
    return errors


# --- QueuedStorage (async_image_save.storage) ---


@checks.register(TAG)
def check_queued_storages(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E011: a QueuedStorage, its storages or its cache cannot be set up.

    W002: ``delete_local`` with a per-process cache (LocMemCache).
    """
    from django.core.cache import InvalidCacheBackendError, caches
    from django.core.cache.backends.locmem import LocMemCache

    from async_image_save.storage_registry import iter_queued_storages

    try:
        found = list(iter_queued_storages())
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Fix the QueuedStorage entry in STORAGES (see the storage documentation).",
                id="async_image_save.E011",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for identity, storage in found:
        for role in ("local", "remote"):
            try:
                getattr(storage, role)
            except ImproperlyConfigured as exc:
                errors.append(
                    checks.Error(
                        f"{identity}: {exc}",
                        hint=f"Give {role}= an alias in STORAGES, a dotted path or a storage.",
                        id="async_image_save.E011",
                    )
                )
    if not found:
        return errors
    alias = conf.ASYNC_IMAGE_SAVE_STORAGE_CACHE
    try:
        cache = caches[alias]
    except InvalidCacheBackendError:
        errors.append(
            checks.Error(
                f"ASYNC_IMAGE_SAVE_STORAGE_CACHE is {alias!r}, which is not in CACHES.",
                hint="Name a cache alias, e.g. 'default'.",
                id="async_image_save.E011",
            )
        )
        return errors
    deleting = [identity for identity, storage in found if storage.delete_local]
    if isinstance(cache, LocMemCache) and deleting:
        errors.append(
            checks.Warning(
                f"QueuedStorage {', '.join(deleting)} deletes local copies after the transfer, "
                f"but the cache {alias!r} is a LocMemCache, private to each process: other "
                "processes keep linking to the deleted local copy for up to "
                "ASYNC_IMAGE_SAVE_STORAGE_PENDING_TIMEOUT seconds.",
                hint="Use a cache that web and workers share (Redis, Memcached), or "
                "delete_local=False.",
                id="async_image_save.W002",
            )
        )
    return errors


@checks.register(TAG)
def check_engine(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E014: the thumbnail engine cannot be loaded (e.g. pyvips missing)."""
    from async_image_save.engines import get_engine

    try:
        get_engine()
    except (ImproperlyConfigured, OSError) as exc:
        return [
            checks.Error(
                str(exc),
                hint="Set ASYNC_IMAGE_SAVE_ENGINE to 'pillow', or install pyvips and libvips.",
                id="async_image_save.E014",
            )
        ]
    return []


@checks.register(TAG)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E017: ASYNC_IMAGE_SAVE_CACHE is not a CACHES alias."""
    alias = conf.ASYNC_IMAGE_SAVE_CACHE
    caches = getattr(settings, "CACHES", {"default": {}})
    if alias in caches:
        return []
    return [
        checks.Error(
            f"ASYNC_IMAGE_SAVE_CACHE is {alias!r}, which is not in CACHES ({sorted(caches)}).",
            hint="Name a cache that web processes and workers share, e.g. a Redis cache.",
            id="async_image_save.E017",
        )
    ]


def report_at_worker_start(**kwargs: Any) -> None:
    """Log this app's check messages when a Celery worker starts (``worker_init``).

    ``manage.py`` commands run the system checks; ``celery worker`` does not, so
    without this a worker with a broken setting would only say so at its
    first job. Errors are logged as errors, warnings as warnings; the worker
    still starts.
    """
    for message in checks.run_checks(tags=[TAG]):
        level = logging.ERROR if message.is_serious() else logging.WARNING
        logger.log(level, "System check at worker start: %s", message)
