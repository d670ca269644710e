from rest_framework import serializers

from ops.models import SystemLog


class SystemLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = SystemLog
        fields = ["id", "timestamp", "level", "component", "message", "metadata"]
        read_only_fields = fields
