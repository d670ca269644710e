import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from trading.models import Strategy
from trading.performance import performance_compute, seoul_today


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--date {value!r} is not a date: use YYYY-MM-DD.") from None


def _percent(value) -> str:
    return "-" if value is None else f"{value * 100:.4f}%"


class Command(BaseCommand):
    help = (
        "Compute and store strategy_performance for one Seoul trading day (default: today):"
        " one row per enabled strategy and per strategy that traded or held shares that day."
        " Idempotent: a second run replaces the rows. Definitions: trading/performance.py."
    )

    def add_arguments(self, parser):
        parser.add_argument("--date", help="YYYY-MM-DD, a Seoul calendar day (default today).")
        parser.add_argument("--strategy", help="Only this strategy (its name).")

    def handle(self, *args, date=None, strategy=None, **options):
        day = _date(date) if date else seoul_today()
        if strategy is not None and not Strategy.objects.filter(name=strategy).exists():
            names = ", ".join(Strategy.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No strategy named {strategy!r} (strategies: {names}).")
        rows = performance_compute(day=day, strategy=strategy)
        for row in rows:
            sharpe = "-" if row.sharpe_ratio is None else f"{row.sharpe_ratio:.2f}"
            self.stdout.write(
                f"{row.date} {row.strategy}: return {_percent(row.total_return)}, "
                f"trades {row.trades_count}, win rate {_percent(row.win_rate)}, "
                f"max drawdown {_percent(row.max_drawdown)}, Sharpe {sharpe}"
            )
        self.stdout.write(f"{len(rows)} strategy row(s) stored for {day}.")
