"""``manage.py async_image_save_recover --older-than 15m [--dry-run] [--retry-failed]``.

``--transfers`` also recovers QueuedStorage transfers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from async_image_save.durations import parse_duration
from async_image_save.models import ImageJob
from async_image_save.recovery import recover_stale, recover_transfers, retry_job, sweep_staging

#: Below this, a job is most likely still queued, not lost.
MIN_AGE = timedelta(minutes=1)


class Command(BaseCommand):
    help = (
        "Re-send stale jobs whose payload is still retrievable and mark the others failed "
        "(message_lost). --older-than must exceed your longest queue wait."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", default="15m", help="e.g. 90s, 15m, 2h (default 15m)")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be done.")
        parser.add_argument(
            "--sweep-staging",
            action="store_true",
            help="Also delete staged payloads of finished or missing jobs (orphans).",
        )
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="Also re-send failed jobs whose file or staged payload still exists.",
        )
        parser.add_argument(  # QueuedStorage (async_image_save.storage)
            "--transfers",
            action="store_true",
            help="Also re-send QueuedStorage transfers stale for --older-than and, with "
            "--retry-failed, failed ones a retry can fix.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            older_than = parse_duration(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if older_than < MIN_AGE:
            raise CommandError(
                f"--older-than {options['older_than']} is shorter than {MIN_AGE}: jobs that "
                "young are usually still in the queue, and inline ones would be failed."
            )
        dry_run = options["dry_run"]
        actions = recover_stale(older_than, dry_run=dry_run)
        if options["retry_failed"]:
            failed = ImageJob.objects.filter(state=ImageJob.State.FAILED)
            actions += [
                a for a in (retry_job(j, dry_run=dry_run) for j in failed) if a.action != "skipped"
            ]
        prefix = "[dry run] " if dry_run else ""
        for item in actions:
            self.stdout.write(
                f"{prefix}{item.action}: {item.job.pk} ({item.job.source_name}): {item.reason}"
            )
        self.stdout.write(f"{prefix}{len(actions)} job(s) handled.")
        if options["transfers"]:  # QueuedStorage (async_image_save.storage)
            transfers = recover_transfers(
                older_than, retry_failed=options["retry_failed"], dry_run=dry_run
            )
            for done in transfers:
                self.stdout.write(
                    f"{prefix}{done.action}: transfer of {done.file.name} "
                    f"({done.file.storage}): {done.reason}"
                )
            handled = sum(1 for done in transfers if done.action != "skipped")
            self.stdout.write(f"{prefix}{handled} transfer(s) handled.")
        if options["sweep_staging"]:
            swept = sweep_staging(dry_run=dry_run)
            for ref, reason in swept:
                self.stdout.write(f"{prefix}swept: {ref}: {reason}")
            self.stdout.write(f"{prefix}{len(swept)} staged payload(s) swept.")
