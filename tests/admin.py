"""Admin registrations used by tests/test_admin.py (autodiscovered into ``admin.site``)."""

from __future__ import annotations

from django.contrib import admin

from async_image_save.admin import AsyncImageAdminMixin
from tests.models import Gallery, Photo


@admin.register(Photo)
class PhotoAdmin(AsyncImageAdminMixin, admin.ModelAdmin):
    list_display = ("id", "title", "image")


@admin.register(Gallery)
class GalleryAdmin(AsyncImageAdminMixin, admin.ModelAdmin):
    """Only ``cover`` is offloaded; ``banner`` is saved by Django in the request."""

    async_image_fields = ("cover",)
