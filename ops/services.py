"""Writes to operations data: system_logs retention."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from ops.models import SystemLog
from qbsite.exceptions import InvalidInput

PRUNE_BATCH_SIZE = 10_000


def system_logs_prune(
    *, older_than_days: int, batch_size: int = PRUNE_BATCH_SIZE, dry_run: bool = False
) -> int:
    """Delete system_logs rows older than `older_than_days` days; returns how many.

    Deletes in batches of `batch_size` rows, each its own short transaction, so that a large
    backlog neither holds locks for long nor builds one huge transaction while the engines go
    on logging. With dry_run, only counts.
    """
    if not isinstance(older_than_days, int) or older_than_days < 1:
        raise InvalidInput(
            f"older_than_days must be a whole number >= 1 (got {older_than_days!r})."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a whole number >= 1 (got {batch_size!r}).")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = SystemLog.objects.filter(timestamp__lt=cutoff)
    if dry_run:
        return old.count()
    total = 0
    while True:
        # DELETE ... WHERE id IN (SELECT id ... LIMIT n): one bounded statement per batch.
        batch = old.order_by("id").values("id")[:batch_size]
        deleted, _ = SystemLog.objects.filter(id__in=batch).delete()
        total += deleted
        if deleted < batch_size:
            return total
