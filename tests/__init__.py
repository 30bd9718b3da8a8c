# Load the Celery app the way a Django project does (``proj/__init__.py``).
from __future__ import annotations

from tests.celery_app import app as celery_app

__all__ = ["celery_app"]
