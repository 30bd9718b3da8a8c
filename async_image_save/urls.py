"""URLs: ``path("images/", include("async_image_save.urls"))``."""

from __future__ import annotations

from django.urls import path

from async_image_save.views import job_status

app_name = "async_image_save"

urlpatterns = [
    path("jobs/<uuid:job_id>/", job_status, name="job-status"),
]
