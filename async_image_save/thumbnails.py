"""Thumbnails in pages: ``thumbnail(obj.photo, "small")`` and its placeholder.

A lookup reads the :class:`~async_image_save.models.Thumbnail` record (cached),
never the storage: ``url``, ``width`` and ``height`` cost no ``exists()``,
``size()`` or ``open()`` call, which on S3 would be a network round trip each.
Until a thumbnail exists, :func:`thumbnail` returns a falsy :class:`Placeholder`;
one that was never made (a spec added later, an image saved before the app was
installed) is queued once, deduplicated through Django's cache.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.core.cache import caches
from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.templatetags.static import static

from async_image_save.conf import conf
from async_image_save.generation import (  # noqa: F401  (public names kept here)
    field_specs,
    generate_thumbnails,
    thumbnail_name,
)
from async_image_save.lookup import lookup, prefetch
from async_image_save.models import ImageJob
from async_image_save.specs import ThumbnailSpec

logger = logging.getLogger("async_image_save")


@dataclass(frozen=True)
class ThumbnailFile:
    """A generated thumbnail: truthy, with ``url``, ``width`` and ``height`` from the record."""

    name: str
    url: str
    width: int
    height: int
    size: int

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Placeholder:
    """Stands in for a thumbnail that does not exist yet: falsy, sized to the spec."""

    url: str
    width: int
    height: int
    name: str = ""

    def __bool__(self) -> bool:
        return False


def placeholder_url() -> str:
    """The configured placeholder URL, or the bundled SVG."""
    return conf.ASYNC_IMAGE_SAVE_PLACEHOLDER_URL or static("async_image_save/placeholder.svg")


def thumbnail(field_file: FieldFile, spec_name: str) -> ThumbnailFile | Placeholder:
    """The thumbnail ``spec_name`` of ``field_file``, or a :class:`Placeholder`.

    Raises ``ValueError`` naming the known specs when ``spec_name`` is not one.
    """
    if not isinstance(field_file, FieldFile):
        raise TypeError(
            "thumbnail() needs a model's FieldFile (e.g. photo.image), "
            f"got {type(field_file).__name__}."
        )
    specs = {s.name: s for s in field_specs(field_file.instance, field_file.field.name)}
    spec = specs.get(spec_name)
    if spec is None:
        raise ValueError(
            f"No thumbnail spec {spec_name!r} for {field_file.instance._meta.label}."
            f"{field_file.field.name}; known specs: {sorted(specs) or 'none'}."
        )
    record = lookup(field_file.name, spec) if field_file.name else None
    if record is None:
        if field_file.name:
            _request_missing(field_file, spec)
            if conf.ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS:
                record = lookup(field_file.name, spec)
        if record is None:
            return Placeholder(url=placeholder_url(), width=spec.width, height=spec.height)
    return ThumbnailFile(
        name=record["name"],
        url=field_file.storage.url(record["name"]),
        width=record["width"],
        height=record["height"],
        size=record["size"],
    )


def prefetch_thumbnails(field_files: Iterable[FieldFile]) -> None:
    """Load the thumbnail records of many images in one query (for list pages)."""
    pairs = []
    for field_file in field_files:
        if field_file and field_file.name:
            for spec in field_specs(field_file.instance, field_file.field.name):
                pairs.append((field_file.name, spec))
    prefetch(pairs)


def _request_missing(field_file: FieldFile, spec: ThumbnailSpec) -> None:
    """Queue (once) or, if configured, make now the thumbnails of a source that has none."""
    instance, field_name = field_file.instance, field_file.field.name
    if conf.ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS:
        generate_thumbnails(instance, field_name)
        return
    if not conf.ASYNC_IMAGE_SAVE_GENERATE_MISSING:
        return
    # One request makes every spec of the field, so deduplicate per source, not per spec.
    all_digests = ",".join(sorted(s.digest for s in field_specs(instance, field_name)))
    digest = hashlib.sha256(f"{field_file.name}\0{all_digests}".encode()).hexdigest()
    cache = caches[conf.ASYNC_IMAGE_SAVE_CACHE]
    if not cache.add(f"async_image_save:missing:{digest}", 1, MISSING_REQUEST_SECONDS):
        return  # already asked for, by this or another process sharing the cache
    busy = ImageJob.objects.filter(
        content_type=ContentType.objects.get_for_model(type(instance)),
        object_id=str(instance.pk),
        field_name=field_name,
        state__in=(ImageJob.State.PENDING, ImageJob.State.SAVED),
    ).exists()
    if busy:
        return  # its job will make the thumbnails
    from async_image_save.tasks import regenerate_thumbnails, send_options

    args = (instance._meta.label, str(instance.pk), field_name)

    def send() -> None:
        try:
            regenerate_thumbnails.apply_async(args, **send_options())
        except Exception:
            logger.exception("async_image_save could not queue missing thumbnails of %s", args)

    transaction.on_commit(send)


#: How long a request for missing thumbnails is remembered (so it is sent once).
MISSING_REQUEST_SECONDS = 600
