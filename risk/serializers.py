from rest_framework import serializers

from risk.models import RiskMetric


class RiskMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskMetric
        fields = [
            "id",
            "timestamp",
            "portfolio_value",
            "daily_pnl",
            "var_95",
            "max_drawdown",
            "sharpe_ratio",
            "beta",
        ]
        read_only_fields = fields
