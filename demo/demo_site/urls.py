"""URLs of the demo site."""

from __future__ import annotations

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("images/", include("async_image_save.urls")),
    path("", include("gallery.urls")),
]

if settings.DEBUG and not settings.S3_BUCKET:
    # The development server serves uploads from MEDIA_ROOT (static files are
    # served by django.contrib.staticfiles' runserver).
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
