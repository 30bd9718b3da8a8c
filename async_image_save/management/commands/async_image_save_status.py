"""``manage.py async_image_save_status``: job counts per state and the oldest pending job."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count
from django.utils import timezone

from async_image_save.models import ImageJob


class Command(BaseCommand):
    help = "Print how many async_image_save jobs are in each state, and the oldest pending one."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = dict(ImageJob.objects.values_list("state").annotate(n=Count("pk")).order_by())
        for state in ImageJob.State.values:
            self.stdout.write(f"{state:>8}: {counts.get(state, 0)}")
        oldest = (
            ImageJob.objects.filter(state=ImageJob.State.PENDING).order_by("created_at").first()
        )
        if oldest is None:
            self.stdout.write("no pending job")
            return
        waited = int((timezone.now() - oldest.created_at).total_seconds())
        self.stdout.write(f"oldest pending: {oldest.pk} ({oldest.source_name}), waiting {waited}s")
