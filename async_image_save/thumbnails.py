"""Thumbnails of a saved image: generation in the worker, lookup in templates.

Each generated thumbnail is recorded in :class:`~async_image_save.models.Thumbnail`,
so ``thumbnail(obj.photo, "small").url`` needs one indexed query and no storage
call. Until a thumbnail exists, :func:`thumbnail` returns a falsy
:class:`Placeholder`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.db.models.fields.files import FieldFile, ImageField
from django.templatetags.static import static

from async_image_save.conf import conf
from async_image_save.imaging import render_thumbnails
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
    instance: Any, field_name: str, content_type: ContentType | None = None
) -> list[Thumbnail]:
    """Render every spec of the field from one decode, store and record them.

    Writes through the field's own storage. Re-running is safe: an existing
    file under the deterministic name is replaced and its record updated.
    ``content_type`` saves a lookup when the caller already has it.
    """
    field_file: FieldFile = getattr(instance, field_name)
    specs = field_specs(instance, field_name)
    if not field_file or not specs:
        return []
    storage = field_file.storage
    source_name = field_file.name
    with storage.open(source_name, "rb") as fp:
        rendered = render_thumbnails(fp, specs)
    content_type = content_type or ContentType.objects.get_for_model(type(instance))
    records = []
    for item in rendered:
        name = thumbnail_name(source_name, item.spec, item.extension)
        if storage.exists(name):
            storage.delete(name)
        stored = storage.save(name, ContentFile(item.data))
        record, _ = Thumbnail.objects.update_or_create(
            source_name=source_name,
            spec=item.spec.name,
            defaults={
                "content_type": content_type,
                "object_id": str(instance.pk),
                "field_name": field_name,
                "spec_hash": item.spec.digest,
                "name": stored,
                "width": item.width,
                "height": item.height,
                "size": len(item.data),
            },
        )
        records.append(record)
    return records


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
    record = None
    if field_file.name:
        # The hash makes a changed spec show its placeholder, not the old output.
        record = Thumbnail.objects.filter(
            source_name=field_file.name, spec=spec_name, spec_hash=spec.digest
        ).first()
    if record is None:
        return Placeholder(url=placeholder_url(), width=spec.width, height=spec.height)
    return ThumbnailFile(
        name=record.name,
        url=field_file.storage.url(record.name),
        width=record.width,
        height=record.height,
        size=record.size,
    )
