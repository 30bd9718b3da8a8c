"""Admin integration: offloaded uploads in change forms, actions, and a read-only job admin.

``class PhotoAdmin(AsyncImageAdminMixin, admin.ModelAdmin)`` offloads image
uploads of the change form through ``save_image()``, shows each image field's
latest job and its placeholder, and adds the actions "Re-save images in the
background" and "Regenerate thumbnails".
"""

from __future__ import annotations

import posixpath
from typing import Any

from django.contrib import admin, messages
from django.contrib.contenttypes.models import ContentType
from django.core.files import File
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from async_image_save.forms import AsyncImageForm
from async_image_save.models import ImageJob
from async_image_save.recovery import retry_job
from async_image_save.saving import save_image
from async_image_save.templatetags.async_image_save import thumbnail_img
from async_image_save.thumbnails import field_specs


def _image_fields(model: Any, names: tuple[str, ...] | None) -> list[str]:
    from django.db import models

    fields = [f.name for f in model._meta.concrete_fields if isinstance(f, models.ImageField)]
    return [n for n in fields if names is None or n in names]


class AsyncImageAdminMixin:
    """``ModelAdmin`` mixin; put it before ``admin.ModelAdmin`` in the bases."""

    async_image_fields: tuple[str, ...] | None = None
    actions = ["resave_images", "regenerate_thumbnails"]

    class Media:
        js = ("async_image_save/status.js",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change=change, **kwargs)  # type: ignore[misc]
        request_for_form = request

        class AdminAsyncImageForm(AsyncImageForm, form):  # type: ignore[valid-type,misc]
            async_image_fields = self.async_image_fields

            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, request=request_for_form, **kw)

        AdminAsyncImageForm.__name__ = form.__name__
        return AdminAsyncImageForm

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, "async_image_status"] if obj is not None else fields

    @admin.display(description=_("Image processing"))
    def async_image_status(self, obj: Any) -> str:
        """Latest job per image field, with the placeholder while it is pending."""
        rows = []
        content_type = ContentType.objects.get_for_model(type(obj))
        for name in _image_fields(type(obj), self.async_image_fields):
            job = (
                ImageJob.objects.filter(
                    content_type=content_type, object_id=str(obj.pk), field_name=name
                )
                .order_by("-created_at")
                .first()
            )
            specs = field_specs(obj, name)
            preview = ""
            if specs and (getattr(obj, name) or (job and not job.is_finished)):
                # While a job runs, the placeholder is tagged so status.js swaps it.
                preview = render_to_string(
                    "async_image_save/thumbnail_img.html",
                    thumbnail_img(getattr(obj, name), specs[0].name, job=job),
                )
            state = job.get_state_display() if job else _("no job")
            error = f" — {job.error_code}: {job.error}" if job and job.error else ""
            rows.append((name, state, error, preview))
        return format_html_join("", "<p><b>{}</b>: {}{}<br>{}</p>", rows) or "-"

    @admin.action(description=_("Re-save images in the background"))
    def resave_images(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Send each selected object's current image through the pipeline again."""
        count = 0
        for obj in queryset:
            for name in _image_fields(type(obj), self.async_image_fields):
                field_file = getattr(obj, name)
                if not field_file:
                    continue
                try:
                    with field_file.storage.open(field_file.name, "rb") as fh:
                        save_image(
                            File(fh, name=posixpath.basename(field_file.name)),
                            obj,
                            name,
                            user=request.user,
                        )
                except (OSError, ValueError) as exc:  # a missing or unreadable file
                    self.message_user(  # type: ignore[attr-defined]
                        request,
                        _("%(obj)s: %(name)s was not re-saved (%(error)s).")
                        % {"obj": obj, "name": field_file.name, "error": exc},
                        messages.WARNING,
                    )
                    continue
                count += 1
        self.message_user(  # type: ignore[attr-defined]
            request,
            ngettext(
                "%d image queued to be saved again.", "%d images queued to be saved again.", count
            )
            % count,
            messages.SUCCESS,
        )

    @admin.action(description=_("Regenerate thumbnails"))
    def regenerate_thumbnails(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Queue thumbnail regeneration for each selected object's image fields."""
        from async_image_save.tasks import regenerate_thumbnails, send_options

        count = 0
        for obj in queryset:
            for name in _image_fields(type(obj), self.async_image_fields):
                if getattr(obj, name):
                    regenerate_thumbnails.apply_async(
                        (obj._meta.label, str(obj.pk), name), **send_options()
                    )
                    count += 1
        self.message_user(  # type: ignore[attr-defined]
            request,
            ngettext(
                "%d image queued for new thumbnails.", "%d images queued for new thumbnails.", count
            )
            % count,
            messages.SUCCESS,
        )


@admin.register(ImageJob)
class ImageJobAdmin(admin.ModelAdmin):
    """Read-only list of jobs, with a "Retry" action for failed ones."""

    list_display = (
        "source_name",
        "state",
        "error_code",
        "content_type",
        "object_id",
        "field_name",
        "attempts",
        "created_at",
    )
    list_filter = ("state", "content_type", "error_code")
    search_fields = ("object_id", "source_name", "id")
    date_hierarchy = "created_at"
    actions = ["retry_failed"]
    readonly_fields = [f.name for f in ImageJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying changes jobs: it needs the model's change permission."""
        return request.user.has_perm("async_image_save.change_imagejob")

    @admin.action(description=_("Retry selected failed jobs"), permissions=["retry"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Re-send failed jobs whose file or staged payload can still be had."""
        done, skipped = 0, []
        for job in queryset:
            result = retry_job(job)
            if result.action == "skipped":
                skipped.append(f"{job.source_name}: {result.reason}")
            else:
                done += 1
        if done:
            self.message_user(
                request, ngettext("%d job sent again.", "%d jobs sent again.", done) % done
            )
        for line in skipped:
            self.message_user(request, _("Not retried: %s") % line, messages.WARNING)
