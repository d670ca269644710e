from django.db import models
from django.db.models import Q

from qbsite.fields import MoneyField, RatioField


class RiskMetric(models.Model):
    """A snapshot of the portfolio's risk (risk_metrics), taken at an interval and on breaches."""

    timestamp = models.DateTimeField(db_index=True)
    portfolio_value = MoneyField()
    daily_pnl = MoneyField(default=0)
    var_95 = MoneyField(
        null=True, blank=True, help_text="1-day historical VaR at 95 %, KRW, as a positive loss."
    )
    max_drawdown = RatioField(default=0, help_text="0..1, as a positive fraction.")
    sharpe_ratio = RatioField(null=True, blank=True)
    beta = RatioField(null=True, blank=True)

    class Meta:
        db_table = "risk_metrics"
        ordering = ["-timestamp"]
        constraints = [
            models.CheckConstraint(
                condition=Q(portfolio_value__gte=0), name="risk_metrics_portfolio_value_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(var_95__isnull=True) | Q(var_95__gte=0), name="risk_metrics_var_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(max_drawdown__gte=0) & Q(max_drawdown__lte=1),
                name="risk_metrics_max_drawdown_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"risk @ {self.timestamp:%Y-%m-%d %H:%M}"
