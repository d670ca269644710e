"""The order state machine: the one place that knows which status may follow which.

    NEW -> SUBMITTED | DENIED | CANCELED
    SUBMITTED -> ACCEPTED | REJECTED | PARTIALLY_FILLED | FILLED | CANCEL_PENDING | CANCELED
                 | EXPIRED
    ACCEPTED -> PARTIALLY_FILLED | FILLED | CANCEL_PENDING | CANCELED | EXPIRED
    PARTIALLY_FILLED -> PARTIALLY_FILLED | FILLED | CANCEL_PENDING | CANCELED | EXPIRED
    CANCEL_PENDING -> CANCELED | PARTIALLY_FILLED | FILLED | EXPIRED
                      | ACCEPTED (the broker refused the cancel; back to where it was)
    FILLED, CANCELED, REJECTED, DENIED, EXPIRED: final.

A fill may arrive while a cancel is pending (the broker filled before it saw the cancel), so
CANCEL_PENDING accepts fills. PARTIALLY_FILLED -> PARTIALLY_FILLED is each further partial fill.
DENIED is our own pre-trade checks saying no (the order never left QB); REJECTED is the broker's.
"""

from __future__ import annotations

from qbsite.exceptions import Conflict

from .models import OrderStatus as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.NEW: frozenset({S.SUBMITTED, S.DENIED, S.CANCELED}),
    S.SUBMITTED: frozenset(
        {
            S.ACCEPTED,
            S.REJECTED,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCEL_PENDING,
            S.CANCELED,
            S.EXPIRED,
        }
    ),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELED, S.EXPIRED}
    ),
    S.CANCEL_PENDING: frozenset({S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.ACCEPTED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.DENIED: frozenset(),
    S.EXPIRED: frozenset(),
}

FINAL = frozenset(status for status, nexts in TRANSITIONS.items() if not nexts)
# Orders the broker may still fill (what "open orders" means).
OPEN = frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING})
# Statuses a cancel request applies to; NEW is canceled at once (it never left QB).
CANCELABLE = frozenset({S.NEW, S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED})


class IllegalTransition(Conflict):
    code = "illegal_transition"


def check_transition(from_status: str, to_status: str, *, order: str = "the order") -> None:
    """Raise IllegalTransition unless `to_status` may follow `from_status`."""
    if from_status not in TRANSITIONS:
        raise IllegalTransition(f"{order} has an unknown status {from_status!r}.")
    if to_status not in TRANSITIONS:
        raise IllegalTransition(f"{to_status!r} is not an order status.")
    if to_status not in TRANSITIONS[from_status]:
        allowed = ", ".join(sorted(TRANSITIONS[from_status])) or "none (it is final)"
        raise IllegalTransition(
            f"{order} cannot go from {from_status} to {to_status}; from {from_status}: {allowed}.",
            details={"from": str(from_status), "to": str(to_status)},
        )


def is_final(status: str) -> bool:
    return status in FINAL
