from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ops.services import PRUNE_BATCH_SIZE, system_logs_prune
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = "Delete system_logs rows older than SYSTEM_LOG_RETENTION_DAYS (30 by default)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep this many days (default: SYSTEM_LOG_RETENTION_DAYS).",
        )
        parser.add_argument("--batch-size", type=int, default=PRUNE_BATCH_SIZE)
        parser.add_argument("--dry-run", action="store_true", help="Count only; delete nothing.")

    def handle(self, *args, days, batch_size, dry_run, **options):
        days = settings.SYSTEM_LOG_RETENTION_DAYS if days is None else days
        try:
            count = system_logs_prune(older_than_days=days, batch_size=batch_size, dry_run=dry_run)
        except QBError as exc:
            raise CommandError(exc.message) from None
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} system_logs rows older than {days} days.")
