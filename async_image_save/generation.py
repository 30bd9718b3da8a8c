"""Generating thumbnails in the worker: one decode, every spec, recorded in the database."""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from functools import partial
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import router, transaction
from django.db.models.fields.files import FieldFile, ImageField

from async_image_save.engines import get_engine
from async_image_save.imaging import RenderedThumbnail
from async_image_save.lookup import forget
from async_image_save.models import Thumbnail
from async_image_save.specs import ThumbnailSpec, specs_for


def thumbnail_name(source_name: str, spec: ThumbnailSpec, extension: str) -> str:
    """Deterministic name: ``<dir>/thumbs/<stem>.<spec>.<spec hash>.<ext>``.

    Changing a spec changes its hash, hence the name, so stale files are never
    served under a new spec.
    """
    directory, filename = posixpath.split(source_name)
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return posixpath.join(directory, "thumbs", f"{stem}.{spec.name}.{spec.digest}.{extension}")


def field_specs(instance: Any, field_name: str) -> list[ThumbnailSpec]:
    """The specs that apply to ``instance``'s ``field_name``."""
    field = instance._meta.get_field(field_name)
    return specs_for(instance._meta.label, field_name, is_image_field=isinstance(field, ImageField))


def generate_thumbnails(
    instance: Any,
    field_name: str,
    content_type: ContentType | None = None,
    only: list[str] | None = None,
    *,
    on_recorded: Callable[[], object] | None = None,
) -> list[Thumbnail]:
    """Render every spec of the field from one decode, store and record them.

    Writes through the field's own storage. Re-running is safe: an existing
    file under the deterministic name is replaced and its record updated.
    ``content_type`` saves a lookup when the caller already has it; ``only``
    limits the work to those spec names.

    The files are written first, then every record in one transaction, so a
    page sees all of a source's new thumbnails or none of them.
    ``on_recorded`` is called once, inside that transaction (the worker marks
    the job ``done`` there, so a page never shows the thumbnails of a job that
    still says ``saved``); it is called also when there is nothing to make.
    """
    field_file: FieldFile = getattr(instance, field_name)
    specs = [s for s in field_specs(instance, field_name) if not only or s.name in only]
    if not field_file or not specs:
        if on_recorded is not None:
            on_recorded()
        return []
    storage = field_file.storage
    source_name = field_file.name
    with storage.open(source_name, "rb") as fp:
        rendered = get_engine().render(fp, specs)
    content_type = content_type or ContentType.objects.get_for_model(type(instance))
    stored = [
        (item, _store(storage, thumbnail_name(source_name, item.spec, item.extension), item))
        for item in rendered
    ]
    using = router.db_for_write(Thumbnail)
    with transaction.atomic(using=using):
        records = []
        for item, name in stored:
            record, _ = Thumbnail.objects.update_or_create(
                source_name=source_name,
                spec=item.spec.name,
                defaults={
                    "content_type": content_type,
                    "object_id": str(instance.pk),
                    "field_name": field_name,
                    "spec_hash": item.spec.digest,
                    "name": name,
                    "width": item.width,
                    "height": item.height,
                    "size": len(item.data),
                },
            )
            # After commit: a page must not cache the old record again meanwhile.
            transaction.on_commit(partial(forget, source_name, item.spec), using=using)
            records.append(record)
        if on_recorded is not None:
            on_recorded()
    return records


def _store(storage: Storage, name: str, item: RenderedThumbnail) -> str:
    """Write one thumbnail under its deterministic ``name``; return the name it got."""
    if storage.exists(name):
        storage.delete(name)
    try:
        stored = storage.save(name, ContentFile(item.data))
    except Exception:
        # A full disk or a dropped connection: no truncated thumbnail may stay.
        with contextlib.suppress(Exception):
            if storage.exists(name):
                storage.delete(name)
        raise
    if stored != name and storage.exists(name):
        # Another worker wrote the same deterministic thumbnail meanwhile (its lease
        # ran out under it): same bytes, so keep one file, not two.
        storage.delete(stored)
        stored = name
    return stored
