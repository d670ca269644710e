from django.db import models
from django.db.models import Q


class LogLevel(models.TextChoices):
    DEBUG = "DEBUG", "Debug"
    INFO = "INFO", "Info"
    WARNING = "WARNING", "Warning"
    ERROR = "ERROR", "Error"
    CRITICAL = "CRITICAL", "Critical"


class SystemLog(models.Model):
    """A log record from an engine or a command (system_logs), kept SYSTEM_LOG_RETENTION_DAYS."""

    timestamp = models.DateTimeField(db_index=True)
    level = models.CharField(max_length=8, choices=LogLevel.choices)
    component = models.CharField(max_length=100, help_text="Logger name, e.g. qb.collector.")
    message = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "system_logs"
        ordering = ["-timestamp", "-id"]
        indexes = [
            models.Index(fields=["component", "-timestamp"], name="system_logs_component_idx"),
            models.Index(fields=["level", "-timestamp"], name="system_logs_level_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(level__in=LogLevel.values), name="system_logs_level_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.level} {self.component}"
