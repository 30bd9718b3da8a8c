"""App configuration: checks (also at worker start), tasks, clean-up receivers, specs."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class AsyncImageSaveConfig(AppConfig):
    """``async_image_save`` app."""

    name = "async_image_save"
    verbose_name = _("Async image save")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import worker_init

        from async_image_save import (
            checks,  # registers the checks
            cleanup,
            tasks,  # noqa: F401  (registers the shared tasks)
            transfer,  # noqa: F401  (registers the QueuedStorage transfer task)
        )

        cleanup.connect()
        worker_init.connect(
            checks.report_at_worker_start, weak=False, dispatch_uid="async_image_save.checks"
        )
        # Each installed app's thumbnails.py may register() specs in code.
        autodiscover_modules("thumbnails")
