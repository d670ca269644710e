import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from marketdata.loaders import BACKFILL_BATCH_SIZE, candles_backfill_csv, csv_files
from marketdata.models import Interval
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = (
        "Load candle history into market_data from CSV files (header"
        " symbol,interval,time,open,high,low,close,volume; time ISO 8601 with an offset)."
        " Idempotent: a re-run changes nothing, so an interrupted run is resumed by running it"
        " again. Each file loads whole or not at all (all its bad lines are reported), unless"
        " --skip-bad."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="CSV files, or directories (*.csv inside).")
        parser.add_argument(
            "--source",
            choices=("csv", "kis"),
            default="csv",
            help="Where history comes from (default csv).",
        )
        parser.add_argument(
            "--interval",
            choices=Interval.values,
            help="Interval of files that have no `interval` column.",
        )
        parser.add_argument(
            "--skip-bad",
            action="store_true",
            help="Load the good lines of a file with bad ones (default: load nothing of it).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=BACKFILL_BATCH_SIZE, help="Rows per COPY."
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, paths, source, interval, skip_bad, batch_size, no_progress, **opts):
        if source == "kis":
            raise CommandError(
                "--source kis is not available yet: the KIS issue provides it. Use --source csv."
            )
        if batch_size < 1:
            raise CommandError("--batch-size must be >= 1.")
        try:
            files = csv_files(paths)
        except QBError as exc:
            raise CommandError(exc.message) from None
        if not files:
            raise CommandError("No CSV files found in: " + ", ".join(paths))
        total = sum(f.stat().st_size for f in files)
        failed = 0
        with tqdm(
            total=total, unit="B", unit_scale=True, file=sys.stderr, disable=no_progress or None
        ) as bar:
            for path in files:
                try:
                    result = candles_backfill_csv(
                        path,
                        interval=interval,
                        skip_bad=skip_bad,
                        batch_size=batch_size,
                        on_bytes=bar.update,
                    )
                except QBError as exc:
                    self._error(exc.message)
                    failed += 1
                    continue
                for bad in result.bad:
                    self._error(str(bad))
                w = result.written
                if result.loaded:
                    skipped = f", {len(result.bad)} bad lines skipped" if result.bad else ""
                    self.stdout.write(
                        f"{path}: {result.lines} lines: {w.inserted} inserted, {w.updated}"
                        f" updated, {w.unchanged} unchanged, {w.repeated} repeated keys{skipped}."
                    )
                else:
                    failed += 1
                    self.stdout.write(
                        f"{path}: NOT loaded: {len(result.bad)} bad lines (see above); fix them"
                        " or use --skip-bad."
                    )
        if failed:
            raise CommandError(f"{failed} of {len(files)} files were not loaded.")

    def _error(self, line: str) -> None:
        # Clears the progress bar for the line, then draws it again below.
        with tqdm.external_write_mode(file=sys.stderr):
            self.stderr.write(line)
