"""URLs for tests/test_views.py: the generic create/update views with an AsyncImageForm."""

from __future__ import annotations

from django import forms
from django.urls import include, path

from async_image_save.forms import AsyncImageForm
from async_image_save.views import AsyncImageCreateView, AsyncImageUpdateView
from tests.models import Photo


class PhotoForm(AsyncImageForm, forms.ModelForm):
    class Meta:
        model = Photo
        fields = ["title", "image"]


class PhotoCreateView(AsyncImageCreateView):
    model = Photo
    form_class = PhotoForm
    template_name = "tests/photo_form.html"
    success_url = "/done/"


class PhotoUpdateView(AsyncImageUpdateView):
    model = Photo
    form_class = PhotoForm
    template_name = "tests/photo_form.html"
    success_url = "/done/"


class PhotoCreateNoSuccessUrlView(AsyncImageCreateView):
    """A JSON-only upload endpoint: no success_url, Photo has no get_absolute_url."""

    model = Photo
    form_class = PhotoForm
    template_name = "tests/photo_form.html"


urlpatterns = [
    path("photos/new/", PhotoCreateView.as_view(), name="photo-create"),
    path("photos/<int:pk>/edit/", PhotoUpdateView.as_view(), name="photo-update"),
    path("api/photos/", PhotoCreateNoSuccessUrlView.as_view(), name="photo-api-create"),
    path("images/", include("async_image_save.urls")),
]
