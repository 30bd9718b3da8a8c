"""Settings for async_image_save, read lazily from ``django.conf.settings``.

Every setting is a flat ``ASYNC_IMAGE_SAVE_*`` name with a documented default
(``docs/settings.rst``). Nothing is read at import time, so ``override_settings``
and per-worker settings work as expected. ``checks.py`` validates the values.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from django.conf import settings

MiB = 1024 * 1024

DEFAULT_THUMBNAILS: dict[str, dict[str, Any]] = {
    "small": {"size": (200, 200)},
    "medium": {"size": (800, 800)},
}


class Settings:
    """Typed, lazy access to the ``ASYNC_IMAGE_SAVE_*`` settings."""

    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, name, default)

    @property
    def ASYNC_IMAGE_SAVE_SERIALIZER(self) -> str:
        """Codec for the payload metadata: ``"msgpack"`` (default) or ``"pickle"``."""
        return self._get("ASYNC_IMAGE_SAVE_SERIALIZER", "msgpack")

    @property
    def ASYNC_IMAGE_SAVE_ALLOW_PICKLE(self) -> bool:
        """Whether workers may decode pickle payloads. Off: pickle frames are refused."""
        return self._get("ASYNC_IMAGE_SAVE_ALLOW_PICKLE", False) is True  # "False" stays off

    @property
    def ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES(self) -> int:
        """Largest upload ``save_image()`` accepts, checked before anything is queued."""
        return self._get("ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES", 50 * MiB)

    @property
    def ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES(self) -> int | None:
        """Largest payload sent inside the Celery message; ``None`` picks one per broker."""
        return self._get("ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES", None)

    @property
    def ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND(self) -> bool:
        """Send committed jobs' messages from a background thread, so requests never wait."""
        return bool(self._get("ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND", True))

    @property
    def ASYNC_IMAGE_SAVE_STAGING(self) -> str | None:
        """Where larger payloads wait: redis, directory, database, storage; ``None``: per broker."""
        return self._get("ASYNC_IMAGE_SAVE_STAGING", None)

    @property
    def ASYNC_IMAGE_SAVE_STAGING_STORAGE(self) -> str:
        """``STORAGES`` alias for ``"storage"`` staging (a storage every machine reaches)."""
        return self._get("ASYNC_IMAGE_SAVE_STAGING_STORAGE", "default")

    @property
    def ASYNC_IMAGE_SAVE_DURABLE(self) -> bool:
        """Stage every payload in the database, in the caller's transaction (an outbox)."""
        return bool(self._get("ASYNC_IMAGE_SAVE_DURABLE", False))

    @property
    def ASYNC_IMAGE_SAVE_STAGING_URL(self) -> str | None:
        """Redis URL for ``"redis"`` staging; ``None`` uses the Celery broker URL."""
        return self._get("ASYNC_IMAGE_SAVE_STAGING_URL", None)

    @property
    def ASYNC_IMAGE_SAVE_STAGING_DIR(self) -> str:
        """Directory for ``"directory"`` staging; must be shared by web and workers."""
        default = os.path.join(tempfile.gettempdir(), "async_image_save-staging")
        return str(self._get("ASYNC_IMAGE_SAVE_STAGING_DIR", default))

    @property
    def ASYNC_IMAGE_SAVE_STAGING_PREFIX(self) -> str:
        """Prefix of the Redis keys that hold staged payloads."""
        return self._get("ASYNC_IMAGE_SAVE_STAGING_PREFIX", "async_image_save:payload:")

    @property
    def ASYNC_IMAGE_SAVE_STAGING_TIMEOUT(self) -> float:
        """Seconds a Redis staging call may take before the job fails (connect: at most 5)."""
        return float(self._get("ASYNC_IMAGE_SAVE_STAGING_TIMEOUT", 10.0))

    @property
    def ASYNC_IMAGE_SAVE_STAGING_TTL(self) -> int:
        """Seconds a staged payload is kept if its job never ends (a safety net)."""
        return self._get("ASYNC_IMAGE_SAVE_STAGING_TTL", 3 * 24 * 3600)

    @property
    def ASYNC_IMAGE_SAVE_QUEUE(self) -> str | None:
        """Celery queue for the save and thumbnail tasks; ``None`` uses Celery's default."""
        return self._get("ASYNC_IMAGE_SAVE_QUEUE", None)

    @property
    def ASYNC_IMAGE_SAVE_MAX_RETRIES(self) -> int:
        """How often a storage error is retried before the job fails."""
        return self._get("ASYNC_IMAGE_SAVE_MAX_RETRIES", 5)

    @property
    def ASYNC_IMAGE_SAVE_RETRY_BACKOFF(self) -> float:
        """First retry delay in seconds; doubled on each retry."""
        return self._get("ASYNC_IMAGE_SAVE_RETRY_BACKOFF", 2.0)

    @property
    def ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX(self) -> float:
        """Upper bound of a retry delay in seconds."""
        return self._get("ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX", 300.0)

    @property
    def ASYNC_IMAGE_SAVE_MAX_ATTEMPTS(self) -> int:
        """Deliveries of one job (retries and redeliveries after crashes) before it fails."""
        return self._get("ASYNC_IMAGE_SAVE_MAX_ATTEMPTS", 10)

    @property
    def ASYNC_IMAGE_SAVE_LEASE_SECONDS(self) -> int:
        """How long a worker's claim on a job lasts; a duplicate delivery waits this long."""
        return self._get("ASYNC_IMAGE_SAVE_LEASE_SECONDS", 600)

    @property
    def ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES(self) -> int:
        """How often publishing to an unreachable broker is retried inside the request."""
        return self._get("ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES", 2)

    @property
    def ASYNC_IMAGE_SAVE_THUMBNAILS(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Thumbnail specs per field, keyed ``"app_label.Model.field"``."""
        return self._get("ASYNC_IMAGE_SAVE_THUMBNAILS", {})

    @property
    def ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS(self) -> dict[str, dict[str, Any]]:
        """Specs for image fields not listed in ``ASYNC_IMAGE_SAVE_THUMBNAILS``."""
        return self._get("ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS", DEFAULT_THUMBNAILS)

    @property
    def ASYNC_IMAGE_SAVE_ENGINE(self) -> str:
        """Thumbnail engine: ``"pillow"``, ``"vips"`` or a dotted path."""
        return self._get("ASYNC_IMAGE_SAVE_ENGINE", "pillow")

    @property
    def ASYNC_IMAGE_SAVE_CACHE(self) -> str:
        """Cache alias for thumbnail records and missing-thumbnail requests.

        Use one that web processes and workers share (Redis, Memcached) so that a
        regenerated or deleted thumbnail is forgotten everywhere.
        """
        return self._get("ASYNC_IMAGE_SAVE_CACHE", "default")

    @property
    def ASYNC_IMAGE_SAVE_GENERATE_MISSING(self) -> bool:
        """Queue thumbnails that were never made when a page asks for them."""
        return bool(self._get("ASYNC_IMAGE_SAVE_GENERATE_MISSING", True))

    @property
    def ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS(self) -> bool:
        """Make missing thumbnails inside the request (slow; for development only)."""
        return bool(self._get("ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS", False))

    @property
    def ASYNC_IMAGE_SAVE_PLACEHOLDER_URL(self) -> str | None:
        """URL shown until a thumbnail exists; ``None`` uses the bundled SVG."""
        return self._get("ASYNC_IMAGE_SAVE_PLACEHOLDER_URL", None)

    # --- QueuedStorage (async_image_save.storage) ---

    @property
    def ASYNC_IMAGE_SAVE_STORAGE_CACHE(self) -> str:
        """Alias in ``CACHES`` that mirrors QueuedStorage's state table."""
        return self._get("ASYNC_IMAGE_SAVE_STORAGE_CACHE", "default")

    @property
    def ASYNC_IMAGE_SAVE_STORAGE_CACHE_TIMEOUT(self) -> int:
        """Seconds a file's ``remote`` state stays cached (it only changes on delete)."""
        return self._get("ASYNC_IMAGE_SAVE_STORAGE_CACHE_TIMEOUT", 24 * 3600)

    @property
    def ASYNC_IMAGE_SAVE_STORAGE_PENDING_TIMEOUT(self) -> int:
        """Seconds any other state (local, transferring, failed, unknown) stays cached."""
        return self._get("ASYNC_IMAGE_SAVE_STORAGE_PENDING_TIMEOUT", 10)


conf = Settings()
