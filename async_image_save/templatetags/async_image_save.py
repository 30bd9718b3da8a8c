"""Template tags: ``{% load async_image_save %}``.

``{% thumbnail photo.image "small" as thumb %}`` puts a thumbnail (or a falsy
placeholder) in the context; ``{% thumbnail_img photo.image "small" %}``
renders an ``<img>`` that shows the placeholder until the thumbnail exists.
Neither ever calls the storage for ``exists()``, ``size()`` or ``open()``.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from async_image_save.thumbnails import Placeholder, ThumbnailFile
from async_image_save.thumbnails import thumbnail as get_thumbnail

register = template.Library()


@register.simple_tag(name="thumbnail")
def thumbnail_tag(field_file: Any, spec_name: str) -> ThumbnailFile | Placeholder:
    """The thumbnail ``spec_name`` of ``field_file`` or its placeholder."""
    return get_thumbnail(field_file, spec_name)


@register.inclusion_tag("async_image_save/thumbnail_img.html")
def thumbnail_img(
    field_file: Any, spec_name: str, alt: str = "", job: Any = None
) -> dict[str, Any]:
    """An ``<img>`` for the thumbnail, or the placeholder marked as pending.

    With ``job=`` (an unfinished ImageJob), the placeholder carries the job's id and
    status URL; ``status.js`` then polls and swaps it without a reload.
    """
    context = {"thumb": get_thumbnail(field_file, spec_name), "spec": spec_name, "alt": alt}
    if job is not None and not job.is_finished:
        context["job_id"] = str(job.pk)
        context["status_url"] = reverse("async_image_save:job-status", args=[job.pk])
    return context
