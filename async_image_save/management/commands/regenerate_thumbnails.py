"""``manage.py regenerate_thumbnails [app_label.Model.field] [--missing-only] [--sync]``."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.core.management.base import BaseCommand, CommandError
from django.db import models

from async_image_save.cleanup import delete_stale_thumbnails
from async_image_save.generation import field_specs, generate_thumbnails
from async_image_save.models import Thumbnail


def _targets(label: str | None) -> list[tuple[type[models.Model], str]]:
    if label:
        try:
            app_label, model_name, field_name = label.split(".")
            model = apps.get_model(app_label, model_name)
            field = model._meta.get_field(field_name)
        except (ValueError, LookupError, FieldDoesNotExist) as exc:
            raise CommandError(
                f"{label!r} is not an app_label.Model.field with a file field: {exc}"
            ) from exc
        if not isinstance(field, models.FileField):
            raise CommandError(f"{label} is not a FileField or ImageField.")
        return [(model, field_name)]
    return [
        (model, f.name)
        for model in apps.get_models()
        for f in model._meta.concrete_fields
        if isinstance(f, models.ImageField)
    ]


class Command(BaseCommand):
    help = "Regenerate thumbnails, in batches through Celery or in this process with --sync."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "target", nargs="?", help="app_label.Model.field (default: all image fields)"
        )
        parser.add_argument("--missing-only", action="store_true", help="Skip complete objects.")
        parser.add_argument(
            "--sync", action="store_true", help="Generate here instead of in workers."
        )
        parser.add_argument("--spec", action="append", help="Only this spec (repeatable).")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Also delete thumbnails of specs that changed or no longer exist.",
        )
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        from async_image_save.tasks import regenerate_thumbnails, send_options

        total = failed = pruned = 0
        only = options["spec"] or None
        for model, field_name in _targets(options["target"]):
            queryset = model._default_manager.exclude(**{field_name: ""}).exclude(
                **{f"{field_name}__isnull": True}
            )
            count = queryset.count()
            for index, obj in enumerate(queryset.iterator(chunk_size=options["batch_size"]), 1):
                field_file = getattr(obj, field_name)
                all_specs = field_specs(obj, field_name)
                if options["prune"]:
                    pruned += delete_stale_thumbnails(
                        field_file.storage, field_file.name, all_specs
                    )
                specs = [s for s in all_specs if not only or s.name in only]
                if not specs:
                    continue
                if options["missing_only"]:
                    have = Thumbnail.objects.filter(
                        source_name=field_file.name, spec_hash__in=[s.digest for s in specs]
                    ).count()
                    if have >= len(specs):
                        continue
                if options["sync"]:
                    try:
                        generate_thumbnails(obj, field_name, only=only)
                    except Exception as exc:  # one broken file must not stop the run
                        failed += 1
                        self.stderr.write(
                            f"\n{model._meta.label} {obj.pk}: {type(exc).__name__}: {exc}"
                        )
                        continue
                else:
                    regenerate_thumbnails.apply_async(
                        (model._meta.label, str(obj.pk), field_name, only), **send_options()
                    )
                total += 1
                self.stdout.write(f"\r{model._meta.label}.{field_name}: {index}/{count}", ending="")
            self.stdout.write("")
        verb = "regenerated" if options["sync"] else "queued"
        self.stdout.write(self.style.SUCCESS(f"{total} image(s) {verb}."))
        if options["prune"]:
            self.stdout.write(f"{pruned} stale thumbnail(s) deleted.")
        if failed:
            self.stdout.write(
                self.style.WARNING(f"{failed} image(s) could not be read (see above).")
            )
