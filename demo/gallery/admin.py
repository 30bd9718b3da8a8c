"""Admin: photos (uploads go through the worker here too), zips, and generated thumbnails.

``AsyncImageAdminMixin`` offloads the change form's upload through
``save_image()``, shows the latest job, and adds the "Re-save images in the
background" and "Regenerate thumbnails" actions. The job list itself
(``ImageJob``) is registered by async_image_save.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from async_image_save.admin import AsyncImageAdminMixin
from async_image_save.models import Thumbnail
from async_image_save.thumbnails import thumbnail
from gallery.models import Photo, SizeBundle


@admin.register(Photo)
class PhotoAdmin(AsyncImageAdminMixin, admin.ModelAdmin):
    list_display = ["preview", "title", "image", "created"]
    list_display_links = ["preview", "title"]
    search_fields = ["title", "image"]
    date_hierarchy = "created"

    @admin.display(description="thumbnail")
    def preview(self, obj: Photo) -> str:
        thumb = thumbnail(obj.image, "small")
        return format_html(
            '<img src="{}" width="{}" height="{}" style="max-width:80px;height:auto" alt="">',
            thumb.url,
            thumb.width,
            thumb.height,
        )


@admin.register(SizeBundle)
class SizeBundleAdmin(admin.ModelAdmin):
    list_display = ["photo", "state", "file", "created", "updated"]
    list_filter = ["state"]
    raw_id_fields = ["photo"]


if not admin.site.is_registered(Thumbnail):

    @admin.register(Thumbnail)
    class ThumbnailAdmin(admin.ModelAdmin):
        """Read-only: thumbnails are made by the worker."""

        list_display = ["name", "spec", "width", "height", "size", "created_at"]
        list_filter = ["spec"]
        search_fields = ["source_name", "name"]

        def has_add_permission(self, request: HttpRequest) -> bool:
            return False

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return False
