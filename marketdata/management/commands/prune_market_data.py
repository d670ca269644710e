from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketdata.timescale import PRUNE_BATCH_SIZE, market_data_prune
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = (
        "Delete market_data older than DATA_RETENTION_DAYS: drop_chunks (and the retention"
        " policy re-set) on TimescaleDB, batched DELETEs on plain PostgreSQL."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep this many days (default: DATA_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=PRUNE_BATCH_SIZE,
            help="Rows per DELETE on plain PostgreSQL.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count only; delete nothing.")

    def handle(self, *args, days, batch_size, dry_run, **options):
        days = settings.DATA_RETENTION_DAYS if days is None else days

        def progress(deleted, through):
            self.stdout.write(f"  deleted {deleted} rows so far (through {through.isoformat()})")

        try:
            result = market_data_prune(
                older_than_days=days, batch_size=batch_size, dry_run=dry_run, progress=progress
            )
        except QBError as exc:
            raise CommandError(exc.message) from None
        cutoff = result.cutoff.isoformat(timespec="seconds")
        if result.mode == "timescaledb":
            if dry_run:
                self.stdout.write(f"Would drop {result.chunks} chunks older than {cutoff}.")
            else:
                self.stdout.write(
                    f"Dropped {result.chunks} chunks older than {cutoff}; retention policy"
                    f" set to {days} days."
                )
        elif dry_run:
            self.stdout.write(f"Would delete {result.rows} market_data rows older than {cutoff}.")
        else:
            self.stdout.write(f"Deleted {result.rows} market_data rows older than {cutoff}.")
