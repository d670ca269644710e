from django.core.management.base import BaseCommand, CommandError

from marketdata.loaders import csv_files, stocks_load_csv
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = (
        "Create or update stocks_metadata from CSV (header symbol,name,market, optionally"
        " sector,market_cap,shares_outstanding). Idempotent. A file with bad lines loads"
        " nothing (all are reported) unless --skip-bad."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="CSV files, or directories (*.csv inside).")
        parser.add_argument(
            "--skip-bad",
            action="store_true",
            help="Load the good lines of a file with bad ones (default: load nothing of it).",
        )

    def handle(self, *args, paths, skip_bad, **options):
        try:
            files = csv_files(paths)
        except QBError as exc:
            raise CommandError(exc.message) from None
        failed = 0
        for path in files:
            try:
                result = stocks_load_csv(path, skip_bad=skip_bad)
            except QBError as exc:
                self.stderr.write(exc.message)
                failed += 1
                continue
            for bad in result.bad:
                self.stderr.write(str(bad))
            if result.loaded:
                skipped = f", {len(result.bad)} bad lines skipped" if result.bad else ""
                self.stdout.write(
                    f"{path}: {result.created} created, {result.updated} updated,"
                    f" {result.unchanged} unchanged{skipped}."
                )
            else:
                failed += 1
                self.stdout.write(
                    f"{path}: NOT loaded: {len(result.bad)} bad lines (see above); fix them or"
                    " use --skip-bad."
                )
        if failed:
            raise CommandError(f"{failed} of {len(files)} files were not loaded.")
