"""The upload form: Django's own ImageField validation decides what is an image."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat

from async_image_save.conf import conf
from gallery.models import Photo


class PhotoForm(forms.ModelForm):
    class Meta:
        model = Photo
        fields = ["title", "image"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The model field is blank=True because the row exists before the
        # worker has saved the file; an upload form still needs a file.
        self.fields["image"].required = True
        self.fields["title"].help_text = "Optional; the file name is used otherwise."

    def clean_image(self) -> UploadedFile:
        image = self.cleaned_data["image"]
        limit = conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES
        if image.size is not None and image.size > limit:
            raise forms.ValidationError(
                "This file is %(size)s; the largest accepted upload is %(limit)s.",
                code="too_large",
                params={"size": filesizeformat(image.size), "limit": filesizeformat(limit)},
            )
        return image
