"""URLs for tests/test_drf.py: a DRF viewset whose serializer offloads images."""

from __future__ import annotations

from django.urls import include, path
from rest_framework import routers, serializers, viewsets

from async_image_save.contrib.drf import AsyncImageSerializerMixin
from tests.models import Photo


class PhotoSerializer(AsyncImageSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = Photo
        fields = ["id", "title", "image"]


class PhotoViewSet(viewsets.ModelViewSet):
    queryset = Photo.objects.all()
    serializer_class = PhotoSerializer


router = routers.DefaultRouter()
router.register("photos", PhotoViewSet)

urlpatterns = [
    path("api/", include(router.urls)),
    path("images/", include("async_image_save.urls")),
]
