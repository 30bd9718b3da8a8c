"""The async_image_save demo site. Importing the Celery app here makes it Celery's current app."""

from __future__ import annotations

from demo_site.celery import app as celery_app

__all__ = ["celery_app"]
