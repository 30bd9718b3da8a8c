"""Django REST framework: a ``ModelSerializer`` mixin that offloads image uploads (extra ``[drf]``).

``class PhotoSerializer(AsyncImageSerializerMixin, serializers.ModelSerializer)``
does what :class:`~async_image_save.forms.AsyncImageForm` does for forms:
``create()``/``update()`` save the instance without the new files (validation
stays DRF's ``ImageField``), then hand each upload to ``save_image()``. The
response carries ``image_jobs``: field name to ``{id, state, status_url}``.
The request in the serializer context gives the jobs their owner and session.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import models

from async_image_save.models import ImageJob
from async_image_save.saving import save_image
from async_image_save.views import job_status_url, remember_job


class AsyncImageSerializerMixin:
    """Mixin for ``ModelSerializer``; put it first in the bases.

    ``async_image_fields`` (default: every model ``ImageField`` in the
    serializer), ``async_image_thumbnails`` and ``async_image_queue`` work as on
    the form mixin.
    """

    async_image_fields: tuple[str, ...] | None = None
    async_image_thumbnails: bool = True
    async_image_queue: str | None = None

    def get_async_image_fields(self) -> list[str]:
        """Names of the serializer fields whose uploads are offloaded."""
        model = self.Meta.model  # type: ignore[attr-defined]
        model_fields = {f.name: f for f in model._meta.concrete_fields}
        names = self.async_image_fields
        if names is None:
            names = tuple(n for n, f in model_fields.items() if isinstance(f, models.ImageField))
        return [n for n in names if n in self.fields and n in model_fields]  # type: ignore[attr-defined]

    def _take_uploads(self, validated_data: dict[str, Any]) -> dict[str, UploadedFile]:
        uploads = {}
        for name in self.get_async_image_fields():
            if isinstance(validated_data.get(name), UploadedFile):
                uploads[name] = validated_data.pop(name)
        return uploads

    def create(self, validated_data: dict[str, Any]) -> Any:
        uploads = self._take_uploads(validated_data)
        instance = super().create(validated_data)  # type: ignore[misc]
        self._offload(instance, uploads)
        return instance

    def update(self, instance: Any, validated_data: dict[str, Any]) -> Any:
        uploads = self._take_uploads(validated_data)
        instance = super().update(instance, validated_data)  # type: ignore[misc]
        self._offload(instance, uploads)
        return instance

    def _offload(self, instance: Any, uploads: dict[str, UploadedFile]) -> None:
        request = self.context.get("request")  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        self.image_jobs: dict[str, ImageJob] = {}
        for name, upload in uploads.items():
            job = save_image(
                upload,
                instance,
                name,
                thumbnails=self.async_image_thumbnails,
                queue=self.async_image_queue,
                user=user,
            )
            if request is not None:
                remember_job(getattr(request, "_request", request), job)
            self.image_jobs[name] = job

    def to_representation(self, instance: Any) -> Any:
        data = super().to_representation(instance)  # type: ignore[misc]
        jobs = getattr(self, "image_jobs", None)
        if jobs:
            data["image_jobs"] = {
                name: {"id": str(job.pk), "state": job.state, "status_url": job_status_url(job)}
                for name, job in jobs.items()
            }
        return data
