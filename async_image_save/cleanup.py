"""Removing thumbnails whose source is gone: object deleted or image replaced.

Runs on transaction commit and goes through the field's storage, so a rolled
back delete removes nothing. Only thumbnails and their records are removed:
the original files follow Django's rule (kept), or django-cleanup's if installed.

A replacement is seen whichever way it is saved (a job, a plain ``ModelForm``,
``instance.save()``): the file names an instance was loaded with are kept on
it, and a save that changes one schedules the old name's thumbnails for
deletion. ``QuerySet.update()`` sends no signals, so it is not seen: call
:func:`delete_thumbnails` for the old name.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from django.apps import apps
from django.db import models, router, transaction
from django.db.models.signals import post_delete, post_init, post_save

from async_image_save.lookup import forget_records
from async_image_save.models import Thumbnail

logger = logging.getLogger("async_image_save")


@cache
def _file_fields(model: type[models.Model]) -> tuple[models.FileField, ...]:
    return tuple(f for f in model._meta.concrete_fields if isinstance(f, models.FileField))


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
    fields = _file_fields(sender)
    if not fields or sender is Thumbnail:
        return
    using = kwargs.get("using") or router.db_for_write(sender)
    for field in fields:
        field_file = getattr(instance, field.name, None)
        if field_file:
            delete_thumbnails_on_commit(field_file.storage, field_file.name, using)


#: Where an instance keeps the file names it was loaded with (field name -> file name).
_LOADED_NAMES = "_async_image_save_loaded_file_names"


def _loaded_file_names(instance: models.Model) -> dict[str, str]:
    """File names of the file fields whose value is loaded (deferred ones are left out)."""
    names = {}
    for field in _file_fields(type(instance)):  # post_init: once per loaded instance
        if field.attname in instance.__dict__:
            value = instance.__dict__[field.attname]
            names[field.name] = str(getattr(value, "name", value) or "")
    return names


def _remember_names(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    instance.__dict__[_LOADED_NAMES] = _loaded_file_names(instance)


def _on_save(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    loaded = instance.__dict__.get(_LOADED_NAMES)
    if raw or not loaded:
        return
    current = _loaded_file_names(instance)
    for name, before in loaded.items():
        if (update_fields is not None and name not in update_fields) or name not in current:
            continue
        if before and before != current[name]:
            # The worker's commit step schedules the same deletion; the second finds nothing.
            delete_thumbnails_on_commit(sender._meta.get_field(name).storage, before, using)
        loaded[name] = current[name]


def connect() -> None:
    """Connect the receivers (called from ``AppConfig.ready``).

    The load/save receivers are connected per model, only for models with a
    file field, so other models pay nothing.
    """
    post_delete.connect(_on_delete, dispatch_uid="async_image_save.cleanup.on_delete")
    for model in apps.get_models():
        if _file_fields(model) and model is not Thumbnail:
            uid = f"async_image_save.cleanup.{model._meta.label_lower}"
            post_init.connect(_remember_names, sender=model, dispatch_uid=uid + ".init")
            post_save.connect(_on_save, sender=model, dispatch_uid=uid + ".save")
