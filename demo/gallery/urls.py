"""URLs of the gallery app."""

from __future__ import annotations

from django.urls import path

from gallery import views

app_name = "gallery"

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("upload/", views.upload, name="upload"),
    path("photos/<int:pk>/", views.detail, name="detail"),
    path("photos/<int:pk>/all-sizes/", views.bundle_create, name="bundle-create"),
    path("bundles/<int:pk>/", views.bundle, name="bundle"),
    path("jobs/", views.jobs, name="jobs"),
]
