"""``AsyncImageForm``: a ``ModelForm`` mixin that offloads uploaded files.

``class PhotoForm(AsyncImageForm, forms.ModelForm)``: ``form.save()`` saves the
instance with its file fields untouched (no bytes written in the request), then
hands each new upload to :func:`~async_image_save.saving.save_image`. The jobs
are in ``form.image_jobs`` (field name -> ImageJob). With ``commit=False`` the
offload happens in ``form.save_m2m()``, as Django users expect. Validation is
Django's own; the "clear" checkbox still clears synchronously.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import models

from async_image_save.models import ImageJob
from async_image_save.saving import save_image


class AsyncImageForm:
    """Mixin for ``ModelForm``; put it first in the bases.

    Class attributes: ``async_image_fields`` (names to offload; default: every
    model ``ImageField`` in the form), ``async_image_thumbnails`` and
    ``async_image_queue`` (passed to ``save_image``). Pass ``request=`` (or
    ``user=``) when instantiating so jobs get an owner and the session may poll.
    """

    async_image_fields: tuple[str, ...] | None = None
    async_image_thumbnails: bool = True
    async_image_queue: str | None = None

    def __init__(self, *args: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_request = request
        self.async_user = user if user is not None else getattr(request, "user", None)
        self.image_jobs: dict[str, ImageJob] = {}
        self._pending_uploads: dict[str, UploadedFile] = {}

    def get_async_image_fields(self) -> list[str]:
        """Names of the form fields whose uploads are offloaded."""
        model_fields = {f.name: f for f in self._meta.model._meta.concrete_fields}  # type: ignore[attr-defined]
        names = self.async_image_fields
        if names is None:
            names = tuple(n for n, f in model_fields.items() if isinstance(f, models.ImageField))
        return [n for n in names if n in self.fields and n in model_fields]  # type: ignore[attr-defined]

    def _post_clean(self) -> None:
        instance = self.instance  # type: ignore[attr-defined]
        originals = {}
        for name in self.get_async_image_fields():
            field = instance._meta.get_field(name)
            dimension_fields = [
                f
                for f in (getattr(field, "width_field", None), getattr(field, "height_field", None))
                if f
            ]
            saved = {
                attr: instance.__dict__.get(attr) for attr in [field.attname, *dimension_fields]
            }
            originals[name] = (field, saved)
        super()._post_clean()  # type: ignore[misc]
        cleaned = getattr(self, "cleaned_data", {})
        for name, (field, saved) in originals.items():
            value = cleaned.get(name)
            if isinstance(value, UploadedFile) and name not in self.errors:  # type: ignore[attr-defined]
                # Keep the upload for save_image() and put the old values back (file
                # and its width/height fields), so instance.save() writes no bytes
                # during the request and the row never pairs old file and new size.
                self._pending_uploads[name] = value
                instance.__dict__.update(saved)
                original = saved[field.attname]
                if isinstance(original, models.fields.files.FieldFile):
                    original._committed = True

    def _save_m2m(self) -> None:
        super()._save_m2m()  # type: ignore[misc]
        self.offload_images()

    def offload_images(self) -> dict[str, ImageJob]:
        """Queue every pending upload; called by ``save()``/``save_m2m()``."""
        from async_image_save.views import remember_job

        for name, upload in list(self._pending_uploads.items()):
            job = save_image(
                upload,
                self.instance,  # type: ignore[attr-defined]
                name,
                thumbnails=self.async_image_thumbnails,
                queue=self.async_image_queue,
                user=self.async_user,
            )
            self.image_jobs[name] = job
            if self.async_request is not None:
                remember_job(self.async_request, job)
            del self._pending_uploads[name]
        return self.image_jobs
