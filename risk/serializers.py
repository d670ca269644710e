from rest_framework import serializers

from risk.models import (
    LimitChange,
    LockKind,
    RiskAlert,
    RiskLimits,
    RiskLock,
    RiskMetric,
    State,
    TradingState,
    TradingStateChange,
)
from risk.services import LIMIT_FIELDS


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


class RiskLimitsSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskLimits
        fields = [*LIMIT_FIELDS, "updated_at"]
        read_only_fields = fields


class RiskLimitsUpdateSerializer(serializers.Serializer):
    """A PATCH of some limits: each named field (validated by the service), plus why."""

    reason = serializers.CharField(required=False, allow_blank=True, default="")

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Send a JSON object."]})
        unknown = sorted(set(data) - {*LIMIT_FIELDS, "reason"})
        if unknown:
            raise serializers.ValidationError(
                {name: ["Not a risk limit."] for name in unknown}
                | {"known": [", ".join(LIMIT_FIELDS)]}
            )
        changes = {name: data[name] for name in LIMIT_FIELDS if name in data}
        if not changes:
            raise serializers.ValidationError(
                {"non_field_errors": ["Name at least one limit to change."]}
            )
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise serializers.ValidationError({"reason": ["A string."]})
        return {"changes": changes, "reason": reason}


class LimitChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(source="changed_by.username", default=None)

    class Meta:
        model = LimitChange
        fields = [
            "id",
            "field",
            "old_value",
            "new_value",
            "changed_by",
            "actor",
            "changed_at",
            "reason",
        ]
        read_only_fields = fields


class TradingStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = TradingState
        fields = ["state", "reason", "changed_by", "changed_at", "automatic"]
        read_only_fields = fields


class TradingStateSetSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=State.choices)
    reason = serializers.CharField(max_length=1000)


class TradingStateChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = TradingStateChange
        fields = ["id", "from_state", "to_state", "reason", "actor", "automatic", "at"]
        read_only_fields = fields


class RiskLockSerializer(serializers.ModelSerializer):
    strategy = serializers.CharField(source="strategy.name", default=None)
    active = serializers.SerializerMethodField()

    class Meta:
        model = RiskLock
        fields = [
            "id",
            "kind",
            "symbol",
            "strategy",
            "reason",
            "created_by",
            "created_at",
            "until",
            "removed_at",
            "removed_by",
            "active",
        ]
        read_only_fields = fields

    def get_active(self, lock) -> bool:
        now = self.context["now"]
        return lock.removed_at is None and lock.created_at <= now < lock.until


class RiskLockCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LockKind.choices, default=LockKind.MANUAL)
    symbol = serializers.RegexField(r"^[0-9A-Z]{6}$", required=False, allow_null=True)
    strategy = serializers.SlugField(required=False, allow_null=True, help_text="Its name.")
    until = serializers.DateTimeField()
    reason = serializers.CharField(max_length=1000)


class RiskAlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskAlert
        fields = [
            "id",
            "alert_type",
            "severity",
            "symbol",
            "current_value",
            "limit_value",
            "action_taken",
            "message",
            "details",
            "created_at",
        ]
        read_only_fields = fields
