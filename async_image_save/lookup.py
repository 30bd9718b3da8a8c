"""Thumbnail records by source and spec, cached so list pages make no query per image."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.core.cache import caches

from async_image_save.conf import conf
from async_image_save.models import Thumbnail
from async_image_save.specs import ThumbnailSpec

#: Records are immutable until regenerated or deleted, which invalidate them.
RECORD_CACHE_SECONDS = 3600
_FIELDS = ("source_name", "spec", "spec_hash", "name", "width", "height", "size")


def _key(source_name: str, spec: ThumbnailSpec) -> str:
    return record_key(source_name, spec.name, spec.digest)


def record_key(source_name: str, spec_name: str, spec_hash: str) -> str:
    """Cache key of one thumbnail record."""
    raw = f"{source_name}\0{spec_name}\0{spec_hash}".encode()
    return "async_image_save:thumb:" + hashlib.sha256(raw).hexdigest()


def lookup(source_name: str, spec: ThumbnailSpec) -> dict[str, Any] | None:
    """The record of ``spec`` for ``source_name`` as a dict, or None (never cached)."""
    cache = caches[conf.ASYNC_IMAGE_SAVE_CACHE]
    key = _key(source_name, spec)
    record = cache.get(key)
    if record is None:
        # The hash makes a changed spec show its placeholder, not the old output.
        record = (
            Thumbnail.objects.filter(source_name=source_name, spec=spec.name, spec_hash=spec.digest)
            .values(*_FIELDS)
            .first()
        )
        if record is not None:
            cache.set(key, record, RECORD_CACHE_SECONDS)
    return record


def prefetch(pairs: Iterable[tuple[str, ThumbnailSpec]]) -> None:
    """Warm the cache for many (source name, spec) pairs with one query."""
    cache = caches[conf.ASYNC_IMAGE_SAVE_CACHE]
    wanted = {_key(name, spec): (name, spec) for name, spec in pairs}
    missing = set(wanted) - set(cache.get_many(list(wanted)))
    if not missing:
        return
    sources = {wanted[k][0] for k in missing}
    found = {}
    for row in Thumbnail.objects.filter(source_name__in=sources).values(*_FIELDS):
        for key in missing:
            name, spec = wanted[key]
            if (row["source_name"], row["spec"], row["spec_hash"]) == (
                name,
                spec.name,
                spec.digest,
            ):
                found[key] = row
    if found:
        cache.set_many(found, RECORD_CACHE_SECONDS)


def forget(source_name: str, spec: ThumbnailSpec) -> None:
    """Drop a cached record (after it was regenerated)."""
    caches[conf.ASYNC_IMAGE_SAVE_CACHE].delete(_key(source_name, spec))


def forget_records(records: Iterable[Thumbnail]) -> None:
    """Drop the cached copies of these records (after they were deleted)."""
    keys = [record_key(r.source_name, r.spec, r.spec_hash) for r in records]
    if keys:
        caches[conf.ASYNC_IMAGE_SAVE_CACHE].delete_many(keys)
