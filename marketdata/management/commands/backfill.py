import asyncio
import datetime as dt
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from marketdata.copy import UpsertResult
from marketdata.loaders import (
    BACKFILL_BATCH_SIZE,
    candles_backfill_csv,
    candles_backfill_rows,
    csv_files,
)
from marketdata.models import Interval, MarketData
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = (
        "Load candle history into market_data from CSV files (header"
        " symbol,interval,time,open,high,low,close,volume; time ISO 8601 with an offset)."
        " Idempotent: a re-run changes nothing, so an interrupted run is resumed by running it"
        " again. Each file loads whole or not at all (all its bad lines are reported), unless"
        " --skip-bad. With --source kis, from the KIS Open API instead: --symbol, --start,"
        " --end, --interval 1d or 1m; idempotent too, and a re-run skips the 1m days already"
        " stored."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "paths", nargs="*", help="CSV files, or directories (*.csv inside); --source csv."
        )
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
        kis = parser.add_argument_group("--source kis")
        kis.add_argument(
            "--symbol",
            action="append",
            default=[],
            help="Symbol(s) to load (repeat, or comma-separated).",
        )
        kis.add_argument("--start", help="First day, YYYY-MM-DD.")
        kis.add_argument("--end", help="Last day, YYYY-MM-DD (default: today in Seoul).")
        kis.add_argument(
            "--refresh",
            action="store_true",
            help="1m: fetch again the days already stored (default: skip them, to resume).",
        )

    def handle(self, *args, paths, source, interval, skip_bad, batch_size, no_progress, **opts):
        if source == "kis":
            if paths:
                raise CommandError("--source kis takes no paths (use --symbol).")
            return self._kis(interval=interval or "1d", no_progress=no_progress, **opts)
        if not paths:
            raise CommandError("Name CSV files or directories to load (or use --source kis).")
        if opts["symbol"] or opts["start"] or opts["end"]:
            raise CommandError("--symbol, --start and --end are for --source kis.")
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

    # --- --source kis ------------------------------------------------------------------------

    def _kis(self, *, interval, no_progress, symbol, start, end, refresh, **_):
        """History from the KIS Open API through kis.client (the shared token and rate limit).

        1d: the range in calls of 100 days, newest first, each batch upserted and committed
        as it comes (a re-run fetches again and changes nothing). 1m: one trading day at a
        time (its own transaction: a day is stored whole or not at all); a re-run skips the
        days already stored, so an interrupted run resumes where it stopped (--refresh
        fetches them again).
        """
        import redis.asyncio

        from kis.client import KST, KISClient
        from kis.config import KISConfig
        from kis.errors import KISError

        if interval not in ("1d", "1m"):
            raise CommandError(f"--source kis loads --interval 1d or 1m, not {interval}.")
        symbols = [s.strip() for item in symbol for s in item.split(",") if s.strip()]
        if not symbols:
            raise CommandError("--source kis needs --symbol (e.g. --symbol 005930).")
        today = dt.datetime.now(KST).date()
        first = _date_option("--start", start)
        last = _date_option("--end", end) if end else today
        if first is None:
            raise CommandError("--source kis needs --start (YYYY-MM-DD).")
        if first > last:
            raise CommandError(f"--start {first} is after --end {last}.")
        if last > today:
            raise CommandError(f"--end {last} is in the future (today is {today} in Seoul).")
        try:
            config = KISConfig.from_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None

        if interval == "1d":
            total = len(symbols) * ((last - first).days + 1)
            unit = "day"
        else:
            days = [d for d in _days(first, last) if _is_trading_day(d)]
            total, unit = len(symbols) * len(days), "day"
        with (
            asyncio.Runner() as runner,
            tqdm(total=total, unit=unit, file=sys.stderr, disable=no_progress or None) as bar,
        ):
            # The Runner keeps one loop for the client between the synchronous database writes.
            client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
            kis = KISClient(config, redis=client)
            try:
                for name in symbols:
                    written, fetched, skipped = UpsertResult(), 0, 0
                    if interval == "1d":
                        batches = kis.daily_candle_batches(name, first, last)
                        until = last
                        while True:
                            try:
                                batch = runner.run(anext(batches))
                            except StopAsyncIteration:
                                break
                            fetched += len(batch)
                            written += self._store(batch)
                            oldest = batch[0].time.date()
                            bar.update((until - oldest).days + 1)
                            until = oldest - dt.timedelta(days=1)
                        bar.update(max(0, (until - first).days + 1))
                    else:
                        for day in days:
                            if not refresh and _minutes_stored(name, day, KST):
                                skipped += 1
                            else:
                                candles = runner.run(kis.minute_candles(name, day))
                                fetched += len(candles)
                                written += self._store(candles)
                            bar.update(1)
                    kept = f", {skipped} days already stored (skipped)" if skipped else ""
                    self.stdout.write(
                        f"{name} {interval} {first}..{last}: {fetched} candles from KIS:"
                        f" {written.inserted} inserted, {written.updated} updated,"
                        f" {written.unchanged} unchanged{kept}."
                    )
            except KISError as exc:
                raise CommandError(
                    f"{exc.message}. What was loaded so far is kept: run the same command"
                    " again to resume."
                ) from None
            except QBError as exc:
                raise CommandError(exc.message) from None
            finally:
                runner.run(kis.aclose())
                runner.run(client.aclose())

    def _store(self, candles) -> UpsertResult:
        written, bad = candles_backfill_rows([c.row() for c in candles], source="kis")
        for line in bad:
            self._error(line)
        return written


def _date_option(name: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{name} {text!r} is not a date (YYYY-MM-DD).") from None


def _days(first: dt.date, last: dt.date):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _is_trading_day(day: dt.date) -> bool:
    from marketdata.krx import is_trading_day

    try:
        return is_trading_day(day)
    except QBError:  # outside the calendar's years: weekdays
        return day.weekday() < 5


def _minutes_stored(symbol: str, day: dt.date, tz) -> bool:
    opening = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
    return MarketData.objects.filter(
        symbol=symbol,
        interval="1m",
        time__gte=opening,
        time__lt=opening + dt.timedelta(days=1),
    ).exists()
