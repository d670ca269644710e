"""Review of the trading state's automatic changes: the engine escalates under the state row's
lock, so an operator's halt made meanwhile is never lowered."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from risk import alerts, services
from risk.engines import state_escalate
from risk.models import Severity, State, TradingState, TradingStateChange

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE NOT l.granted AND d.datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


def test_an_operators_halt_made_during_an_escalation_is_not_lowered(db):
    """The engine decides to reduce (monthly loss) while an operator's HALT is being written:
    the engine must see the halt, not read ACTIVE and then overwrite HALTED with REDUCING."""
    TradingState.objects.get_or_create(pk=1)
    breach = alerts.Breach(
        alerts.AlertType.MONTHLY_LOSS,
        Severity.CRITICAL,
        D(600000),
        D(500000),
        "Realized loss this month 600,000 KRW reached the monthly limit 500,000 KRW.",
        state=State.REDUCING,
    )
    halted, release = threading.Event(), threading.Event()
    outcome = {}

    def operator():
        try:
            with transaction.atomic():
                services.trading_state_set(state="HALTED", actor="admin:olivia", reason="Stop.")
                halted.set()
                release.wait(10)
        finally:
            connections.close_all()

    def engine():
        try:
            outcome["action"] = state_escalate(breach, now=timezone.now())
        finally:
            connections.close_all()

    first = threading.Thread(target=operator)
    first.start()
    assert halted.wait(10)
    second = threading.Thread(target=engine)
    second.start()
    deadline = time.monotonic() + 5
    while not _waiting_on_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    release.set()
    first.join(10)
    second.join(10)
    assert services.trading_state_get() == "HALTED"
    assert outcome["action"] == "Trading already HALTED."
    assert list(TradingStateChange.objects.values_list("to_state", flat=True)) == ["HALTED"]
