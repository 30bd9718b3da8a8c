"""Removing thumbnails whose source is gone: object deleted or image replaced.

Runs on transaction commit and goes through the field's storage, so a rolled
back delete removes nothing. Only thumbnails and their records are removed:
the original files follow Django's rule (kept), or django-cleanup's if installed.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from django.db import models, router, transaction
from django.db.models.signals import post_delete

from async_image_save.lookup import forget_records
from async_image_save.models import Thumbnail

logger = logging.getLogger("async_image_save")


@cache
def _file_fields(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.name for f in model._meta.concrete_fields if isinstance(f, models.FileField))


def _delete_records(storage: Any, records: list[Thumbnail]) -> int:
    """Delete these thumbnails' files (through ``storage``), rows and cached copies."""
    for record in records:
        try:
            storage.delete(record.name)
        except Exception:
            logger.exception("async_image_save could not delete thumbnail %s", record.name)
    Thumbnail.objects.filter(pk__in=[r.pk for r in records]).delete()
    forget_records(records)
    return len(records)


def delete_thumbnails(storage: Any, source_name: str) -> int:
    """Delete every thumbnail of ``source_name`` (files and records); return how many."""
    return _delete_records(storage, list(Thumbnail.objects.filter(source_name=source_name)))


def delete_stale_thumbnails(storage: Any, source_name: str, specs: list[Any]) -> int:
    """Delete thumbnails of ``source_name`` whose spec changed or is gone; return how many."""
    current = {(s.name, s.digest) for s in specs}
    stale = [
        r
        for r in Thumbnail.objects.filter(source_name=source_name)
        if (r.spec, r.spec_hash) not in current
    ]
    return _delete_records(storage, stale)


def delete_thumbnails_on_commit(storage: Any, source_name: str, using: str | None = None) -> None:
    """Schedule :func:`delete_thumbnails` for when the current transaction commits."""
    transaction.on_commit(lambda: delete_thumbnails(storage, source_name), using=using)


def _on_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    names = _file_fields(sender)
    if not names or sender is Thumbnail:
        return
    using = kwargs.get("using") or router.db_for_write(sender)
    for name in names:
        field_file = getattr(instance, name, None)
        if field_file:
            delete_thumbnails_on_commit(field_file.storage, field_file.name, using)


def connect() -> None:
    """Connect the receivers (called from ``AppConfig.ready``)."""
    post_delete.connect(_on_delete, dispatch_uid="async_image_save.cleanup.on_delete")
