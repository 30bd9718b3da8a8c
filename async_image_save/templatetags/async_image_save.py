"""Template tags: ``{% load async_image_save %}``.

``{% thumbnail photo.image "small" as thumb %}`` puts a thumbnail (or a falsy
placeholder) in the context; ``{% thumbnail_img photo.image "small" %}``
renders an ``<img>`` that shows the placeholder until the thumbnail exists.
Neither ever calls the storage for ``exists()``, ``size()`` or ``open()``.
"""

from __future__ import annotations

from typing import Any

from django import template

from async_image_save.thumbnails import Placeholder, ThumbnailFile
from async_image_save.thumbnails import thumbnail as get_thumbnail

register = template.Library()


@register.simple_tag(name="thumbnail")
def thumbnail_tag(field_file: Any, spec_name: str) -> ThumbnailFile | Placeholder:
    """The thumbnail ``spec_name`` of ``field_file`` or its placeholder."""
    return get_thumbnail(field_file, spec_name)


@register.inclusion_tag("async_image_save/thumbnail_img.html")
def thumbnail_img(field_file: Any, spec_name: str, alt: str = "") -> dict[str, Any]:
    """An ``<img>`` for the thumbnail, or the placeholder marked as pending."""
    return {"thumb": get_thumbnail(field_file, spec_name), "spec": spec_name, "alt": alt}
