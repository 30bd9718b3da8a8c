"""tests.settings plus django-cleanup, for tests/cleanup_scenario.py."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_cleanup.apps.CleanupConfig"]  # noqa: F405
