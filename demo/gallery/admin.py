"""Admin: photos (uploads go through the worker here too), zips, and the app's records."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.utils.html import format_html

from async_image_save import save_image
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.thumbnails import thumbnail
from async_image_save.views import remember_job
from gallery.models import Photo, SizeBundle


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
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

    def save_model(self, request: HttpRequest, obj: Photo, form: Any, change: bool) -> None:
        """Offload a newly chosen file to the worker instead of writing it in the request."""
        upload = form.cleaned_data.get("image")
        if "image" not in form.changed_data or not isinstance(upload, UploadedFile):
            super().save_model(request, obj, form, change)
            return
        # Keep the current file (if any) until the worker has saved the new one.
        previous = Photo.objects.filter(pk=obj.pk).values_list("image", flat=True).first()
        obj.image = previous or ""
        super().save_model(request, obj, form, change)
        job = save_image(upload, obj, user=request.user)
        remember_job(request, job)
        self.message_user(
            request, f"{upload.name} was handed to the worker (job {job.pk}); thumbnails follow."
        )


@admin.register(SizeBundle)
class SizeBundleAdmin(admin.ModelAdmin):
    list_display = ["photo", "state", "file", "created", "updated"]
    list_filter = ["state"]
    raw_id_fields = ["photo"]


# async_image_save's own records, read-only, unless the app registers them itself.
if not admin.site.is_registered(ImageJob):

    @admin.register(ImageJob)
    class ImageJobAdmin(admin.ModelAdmin):
        list_display = [
            "created_at",
            "source_name",
            "state",
            "error_code",
            "attempts",
            "size",
            "owner",
        ]
        list_filter = ["state", "error_code"]
        search_fields = ["source_name", "object_id", "sha256", "saved_name"]
        date_hierarchy = "created_at"

        def has_add_permission(self, request: HttpRequest) -> bool:
            return False

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return False


if not admin.site.is_registered(Thumbnail):

    @admin.register(Thumbnail)
    class ThumbnailAdmin(admin.ModelAdmin):
        list_display = ["name", "spec", "width", "height", "size", "created_at"]
        list_filter = ["spec"]
        search_fields = ["source_name", "name"]

        def has_add_permission(self, request: HttpRequest) -> bool:
            return False

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return False
