from django.core.management.base import BaseCommand
from django.utils import timezone

from risk.engines import metrics_snapshot


def _or_dash(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


class Command(BaseCommand):
    help = (
        "Compute the portfolio's risk figures now (value, daily PnL, VaR 95, drawdown, Sharpe,"
        " beta against the limits' benchmark_symbol) and store them as a risk_metrics row, as"
        " the risk engine does every metrics_interval_seconds. Marks are the positions'"
        " current prices. Definitions: risk/metrics.py and risk/engines.py."
    )

    def handle(self, *args, **options):
        row = metrics_snapshot(now=timezone.now())
        self.stdout.write(
            f"risk_metrics {row.pk} at {row.timestamp.isoformat()}: "
            f"portfolio {row.portfolio_value:,.0f} KRW, daily PnL {row.daily_pnl:,.0f} KRW, "
            f"VaR 95 {_or_dash(row.var_95, '{:,.0f} KRW')}, "
            f"max drawdown {row.max_drawdown * 100:.2f} %, "
            f"Sharpe {_or_dash(row.sharpe_ratio, '{:.2f}')}, beta {_or_dash(row.beta, '{:.2f}')}"
        )
