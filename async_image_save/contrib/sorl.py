"""A sorl-thumbnail backend that makes thumbnails in Celery workers (extra ``[sorl]``).

``THUMBNAIL_BACKEND = "async_image_save.contrib.sorl.QueuedThumbnailBackend"``:
sorl's own ``{% thumbnail %}`` tag and ``get_thumbnail()`` then answer from
sorl's key-value store when the thumbnail exists, and otherwise return a
placeholder at once (sorl renders the tag's ``{% empty %}`` branch if it has
one) while the task ``async_image_save.sorl_thumbnail`` makes it. The task's
arguments are plain strings and a dict of options, sent with msgpack: no pickle.
Nothing is read from the storage in the request: no ``exists()``, no download.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.cache import caches
from sorl.thumbnail import default
from sorl.thumbnail.base import ThumbnailBackend
from sorl.thumbnail.conf import defaults as sorl_defaults
from sorl.thumbnail.conf import settings as sorl_settings
from sorl.thumbnail.images import DummyImageFile, ImageFile, get_or_create_storage

from async_image_save.conf import conf

logger = logging.getLogger("async_image_save")
#: A queued thumbnail is not queued again for this long (seconds).
QUEUED_SECONDS = 600


class PendingThumbnail(DummyImageFile):
    """sorl's stand-in for a thumbnail not made yet, with our placeholder URL."""

    @property
    def url(self) -> str:
        from async_image_save.thumbnails import placeholder_url

        return placeholder_url()


class QueuedThumbnailBackend(ThumbnailBackend):
    """sorl backend: existing thumbnails from the key-value store, new ones from a worker."""

    def get_thumbnail(self, file_: Any, geometry_string: str, **options: Any) -> Any:
        """The thumbnail if sorl knows it, else a :class:`PendingThumbnail` (and a queued task)."""
        if not file_:
            raise ValueError("get_thumbnail() needs a file; got an empty value.")
        source = ImageFile(file_)
        options = self.full_options(source, options)
        thumbnail = ImageFile(
            self._get_thumbnail_filename(source, geometry_string, options), default.storage
        )
        cached = default.kvstore.get(thumbnail)
        if cached:
            return cached
        self.queue(source, geometry_string, options, thumbnail.name)
        return PendingThumbnail(geometry_string)

    def full_options(self, source: ImageFile, options: dict[str, Any]) -> dict[str, Any]:
        """Fill in sorl's defaults, so the name matches the one the worker's sorl computes."""
        options = dict(options)
        if sorl_settings.THUMBNAIL_PRESERVE_FORMAT:
            options.setdefault("format", self._get_format(source))
        for key, value in self.default_options.items():
            options.setdefault(key, value)
        for key, setting in self.extra_options:
            value = getattr(sorl_settings, setting)
            if value != getattr(sorl_defaults, setting):
                options.setdefault(key, value)
        return options

    def queue(self, source: ImageFile, geometry: str, options: dict[str, Any], name: str) -> None:
        """Send the generation task once per thumbnail name (deduplicated in the cache)."""
        from async_image_save.tasks import send_options, sorl_thumbnail

        key = "async_image_save:sorl:" + hashlib.sha256(name.encode()).hexdigest()
        if not caches[conf.ASYNC_IMAGE_SAVE_CACHE].add(key, 1, QUEUED_SECONDS):
            return
        args = (source.name, source.serialize_storage(), geometry, _plain(options))
        try:
            sorl_thumbnail.apply_async(args, **send_options())
        except Exception:
            logger.exception("async_image_save could not queue sorl thumbnail %s", name)


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Options as msgpack-safe primitives (tuples become lists)."""
    plain = {}
    for key, value in options.items():
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, (str, int, float, bool, list, type(None))):
            value = str(value)
        plain[str(key)] = value
    return plain


def generate(source_name: str, storage: str, geometry: str, options: dict[str, Any]) -> str:
    """Worker side: let sorl's own backend make and record the thumbnail; return its name."""
    source = ImageFile(source_name, get_or_create_storage(storage))
    return ThumbnailBackend().get_thumbnail(source, geometry, **options).name
