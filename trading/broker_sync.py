"""Keeping our orders, fills and positions in step with a real broker (KIS), and refusing to
trade when they are not.

Applying KIS's figures (`kis_apply_row`): KIS reports each order's totals (filled quantity and
amount, what remains, whether it was canceled). The difference between KIS's filled total and
ours is applied as one fill through services.order_apply_fill, with execution_id
"<ODNO>-<KIS's total>" (so the same total seen by a notice, a poll or a restart is applied once)
and the price that makes our amount equal KIS's (exact for a single execution; the average when
several are merged). An order with nothing remaining at KIS and not all filled is CANCELED
(canceled or refused there). Ours filled beyond KIS's total is a disagreement, never "fixed".
The fill's time: now for today's orders; 15:30 KST of the order's day for an older one.

Real time and fallback (`kis_refresh`): the orders engine calls it when a fill notice
(H0STCNI0 / H0STCNI9) arrives and every ORDERS_SWEEP_SECONDS while KIS orders are open. A notice
triggers a read of KIS's totals rather than being applied itself: notices carry no sequence
number, so a notice and a poll could not tell whether they report the same execution.

Reconciliation (`broker_reconcile`, run by the orders engine when it starts and by
`manage.py reconcile --broker kis`):
1. KIS's orders (from the day of our oldest open KIS order, at most 90 days back, to today),
   positions and cash;
2. each KIS order: ours (same ODNO) gets its missing fills / cancel; a SUBMITTED order of ours
   with no id whose terms match is adopted (it reached KIS before a crash); any other is
   recorded as an external order (client_order_id "kis-ext-<date>-<ODNO>", no strategy, no
   user) with its fills, so the ledger holds every trade the account made;
3. our open KIS orders KIS does not list: from an earlier day -> EXPIRED (day orders end with
   the session); from today -> a disagreement;
4. positions, symbol by symbol (quantity, average price to the won): a difference is a
   disagreement. Cash is reported (ours vs KIS's D+2 cash) but not a disagreement: our fees
   are computed, KIS's are charged, and deposits move KIS's cash only.
The result is stored in BrokerSync (status, reason, the report) and clears any override.
While the last reconciliation disagrees (or could not reach KIS), `trading_allowed()` says no
and the KIS broker sends no new order (REJECTED, BROKER_UNRECONCILED, the reason naming the
disagreement), until a reconciliation agrees or an operator overrides in the admin
(`sync_override`, recorded with who and when).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from marketdata import krx
from marketdata.models import Stock
from qbsite.exceptions import InvalidInput

from . import services
from .brokers import get_broker
from .models import BrokerSync, BrokerSyncStatus, Order, OrderStatus
from .states import FINAL, OPEN

logger = logging.getLogger("qb.trading.broker_sync")

KIS = "kis"
ACTOR = "broker:kis"
LOOKBACK_DAYS = 90  # TTTC0081R covers three months
_PRICE = Decimal("0.01")
_CLOSE = dt.time(15, 30)
# Brokers whose book is not our own tables (the paper broker's is: nothing to reconcile).
RECONCILED_BROKERS = frozenset({KIS})


# --- the refuse-to-trade state ---------------------------------------------------------------


def trading_allowed(broker: str) -> tuple[bool, str]:
    """(may new orders go to `broker`, why not)."""
    if broker not in RECONCILED_BROKERS:
        return True, ""
    row = BrokerSync.objects.filter(broker=broker).first()
    if row is None:
        return False, (
            f"No reconciliation with {broker} yet: the orders engine runs one when it starts "
            f"(or run manage.py reconcile --broker {broker})."
        )
    if row.status == BrokerSyncStatus.AGREED or row.override_at is not None:
        return True, ""
    what = (
        "could not reach the broker" if row.status == BrokerSyncStatus.UNREACHABLE else "disagrees"
    )
    return False, (
        f"Trading with {broker} is stopped: the reconciliation of "
        f"{timezone.localtime(row.checked_at, krx.SEOUL):%Y-%m-%d %H:%M:%S} KST "
        f"{what}: {row.reason} Fix it and run manage.py reconcile --broker {broker}, or override "
        "in the admin (Broker reconciliations)."
    )


def sync_record(*, broker: str, status: str, reason: str, report: dict) -> BrokerSync:
    """Store a reconciliation's outcome; a new outcome ends any override."""
    row, _ = BrokerSync.objects.update_or_create(
        broker=broker,
        defaults={
            "status": status,
            "checked_at": timezone.now(),
            "reason": reason,
            "report": report,
            "override_by": None,
            "override_at": None,
            "override_note": "",
        },
    )
    return row


def sync_override(*, broker: str, user, note: str = "") -> BrokerSync:
    """An operator allows trading with `broker` despite the last reconciliation (audited:
    who, when, why; logged). Lasts until the next reconciliation."""
    if user is None or not getattr(user, "pk", None):
        raise InvalidInput("An override needs the operator who makes it.")
    with transaction.atomic():
        row = BrokerSync.objects.select_for_update().filter(broker=broker).first()
        if row is None:
            raise InvalidInput(f"No reconciliation with {broker} to override yet.")
        row.override_by = user
        row.override_at = timezone.now()
        row.override_note = note
        row.save(update_fields=["override_by", "override_at", "override_note"])
    logger.warning(
        "%s overrode the %s reconciliation (%s: %s): trading allowed. %s",
        user.get_username(),
        broker,
        row.status,
        row.reason,
        note,
        extra={"metadata": {"broker": broker, "user": user.get_username()}},
    )
    return row


def sync_override_clear(*, broker: str) -> None:
    """End an override: the last reconciliation's verdict applies again."""
    BrokerSync.objects.filter(broker=broker).update(
        override_by=None, override_at=None, override_note=""
    )
    logger.warning("Override of the %s reconciliation ended.", broker)


# --- applying KIS's figures to one order -----------------------------------------------------


def _fill_time(row) -> dt.datetime:
    from kis.client import today_kst

    if row.date >= today_kst():
        return timezone.now()
    return dt.datetime.combine(row.date, _CLOSE, krx.SEOUL)


def kis_apply_row(*, order_id: int, row, broker_order_id: str = "") -> tuple[list[str], list[str]]:
    """Bring one of our orders to KIS's figures for it (`row`: kis.client.OrderFills).
    Returns (what was done, what disagrees), each as sentences."""
    from .brokers.kis import execution_id

    done: list[str] = []
    problems: list[str] = []
    with transaction.atomic():
        order = services.order_lock(order_id)
        name = f"order {order.client_order_id} (KIS {row.order_no})"
        if broker_order_id and not order.broker_order_id and order.status == OrderStatus.SUBMITTED:
            services.order_transition(
                order, OrderStatus.ACCEPTED, actor=ACTOR, broker_order_id=broker_order_id
            )
            done.append(f"{name}: found at KIS, ACCEPTED")
        ours = order.filled_quantity
        if row.filled > ours:
            delta = row.filled - ours
            applied = order.fills.aggregate(amount=Sum(F("price") * F("quantity")))["amount"]
            amount = row.filled_amount or row.average_price * row.filled
            price = ((amount - (applied or 0)) / delta).quantize(_PRICE, ROUND_HALF_EVEN)
            if price <= 0:
                price = row.average_price
            try:
                trade = services.order_apply_fill(
                    order_id=order.pk,
                    execution_id=execution_id(row.order_no, row.filled),
                    quantity=delta,
                    price=price,
                    at=_fill_time(row),
                    actor=ACTOR,
                    locked=order,
                )
            except services.FillError as exc:
                problems.append(f"{name}: KIS filled {row.filled}, ours {ours}: {exc.message}")
                return done, problems
            if trade is not None:
                order = trade.order
                done.append(f"{name}: applied a missing fill of {delta} @ {price}")
        elif row.filled < ours:
            problems.append(
                f"{name}: we have {ours} filled, KIS only {row.filled} (of {row.quantity})."
            )
        if row.remaining == 0 and row.filled < row.quantity and order.status in OPEN:
            services.order_transition(
                order,
                OrderStatus.CANCELED,
                actor=ACTOR,
                reason=f"Canceled at KIS with {row.filled} of {row.quantity} filled.",
            )
            done.append(f"{name}: canceled at KIS ({row.filled} of {row.quantity} filled)")
        elif row.remaining > 0 and order.status in FINAL:
            problems.append(
                f"{name} is {order.status} here but KIS still has {row.remaining} open."
            )
    for line in done:
        logger.info("KIS sync: %s", line)
    return done, problems


def _rows_by_id(rows) -> dict[str, object]:
    from .brokers.kis import make_broker_order_id

    return {make_broker_order_id(row.org_no, row.order_no): row for row in rows}


def kis_refresh_order(*, order_id: int, broker, broker_order_id: str) -> list[str]:
    """One order brought to KIS's figures (after a cancel). Returns what was done."""
    rows = _rows_by_id(broker.kis_orders(_oldest_day(Order.objects.filter(pk=order_id))))
    row = rows.get(broker_order_id)
    if row is None:
        return []
    done, problems = kis_apply_row(order_id=order_id, row=row, broker_order_id=broker_order_id)
    for problem in problems:
        logger.warning("KIS sync: %s", problem)
    return done


def _oldest_day(orders) -> dt.date:
    from kis.client import today_kst

    today = today_kst()
    oldest = orders.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None:
        return today
    day = timezone.localtime(oldest, krx.SEOUL).date()
    return max(min(day, today), today - dt.timedelta(days=LOOKBACK_DAYS))


@dataclass
class RefreshResult:
    open_orders: int = 0
    applied: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def kis_open_orders():
    return Order.objects.filter(broker=KIS, status__in=OPEN).exclude(broker_order_id="")


def kis_refresh(*, broker=None) -> RefreshResult:
    """Our open KIS orders brought to KIS's figures (fills, cancels): the notice handler and
    the polling fallback. Nothing to ask KIS when no order is open."""
    result = RefreshResult()
    orders = list(kis_open_orders().values_list("pk", "broker_order_id"))
    if not orders:
        return result
    broker = broker or get_broker(KIS)
    rows = _rows_by_id(broker.kis_orders(_oldest_day(kis_open_orders())))
    for pk, bid in orders:
        row = rows.get(bid)
        if row is None:
            continue
        done, problems = kis_apply_row(order_id=pk, row=row)
        result.applied += done
        result.problems += problems
    for problem in result.problems:
        logger.warning("KIS sync: %s", problem)
    result.open_orders = kis_open_orders().count()
    return result


# --- reconciliation --------------------------------------------------------------------------


@dataclass
class SyncReport:
    broker: str
    applied: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreachable: str = ""

    @property
    def agreed(self) -> bool:
        return not self.disagreements and not self.unreachable

    @property
    def status(self) -> str:
        if self.unreachable:
            return BrokerSyncStatus.UNREACHABLE
        return BrokerSyncStatus.AGREED if self.agreed else BrokerSyncStatus.DISAGREED

    @property
    def reason(self) -> str:
        if self.unreachable:
            return self.unreachable
        shown = self.disagreements[:5]
        more = len(self.disagreements) - len(shown)
        return " ".join(shown) + (f" (and {more} more)" if more > 0 else "")

    def lines(self) -> list[str]:
        out = [f"applied: {line}" for line in self.applied]
        out += [f"external: {line}" for line in self.external]
        out += [f"note: {line}" for line in self.notes]
        out += [f"DISAGREES: {line}" for line in self.disagreements]
        if self.unreachable:
            out.append(f"UNREACHABLE: {self.unreachable}")
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def _external_order(row, broker_order_id: str) -> Order | None:
    """The external order recorded for a KIS order we did not place (None: its symbol is not
    in stocks_metadata)."""
    if not Stock.objects.filter(symbol=row.symbol).exists():
        return None
    client_order_id = f"kis-ext-{row.date:%Y%m%d}-{row.order_no}"
    at = row.time or dt.datetime.combine(row.date, dt.time(9), krx.SEOUL)
    with transaction.atomic():
        order, _ = services.order_create(
            client_order_id=client_order_id,
            symbol=row.symbol,
            side=row.side.upper(),
            order_type="LIMIT" if row.price else "MARKET",
            quantity=row.quantity,
            limit_price=row.price or None,
            broker=KIS,
            actor=ACTOR,
            at=at,
        )
        if order.status == OrderStatus.NEW:
            order = services.order_lock(order.pk)
            services.order_transition(
                order,
                OrderStatus.SUBMITTED,
                actor=ACTOR,
                at=at,
                reason="Placed outside QB (found at KIS by reconciliation).",
            )
            services.order_transition(
                order, OrderStatus.ACCEPTED, actor=ACTOR, at=at, broker_order_id=broker_order_id
            )
    return order


def _adoptable(ours: list[Order], row) -> Order | None:
    """A SUBMITTED order of ours with no id whose terms are the KIS order's."""
    for order in ours:
        price = order.limit_price if order.limit_price is not None else Decimal(0)
        if (
            order.symbol_id == row.symbol
            and order.side.lower() == row.side
            and order.quantity == row.quantity
            and price == row.price
            and (
                row.time is None
                or order.submitted_at is None
                or row.time >= order.submitted_at - dt.timedelta(seconds=60)
            )
        ):
            return order
    return None


def broker_reconcile(*, name: str = KIS) -> SyncReport:
    """Reconcile with the broker `name` (see the module doc), store and return the report."""
    from kis.client import today_kst

    from .reconcile import broker_differences

    report = SyncReport(broker=name)
    if name not in RECONCILED_BROKERS:
        raise InvalidInput(f"Broker {name!r} keeps its book in our tables: nothing to reconcile.")
    try:
        broker = get_broker(name)
        start = _oldest_day(Order.objects.filter(broker=name, status__in=OPEN))
        rows = broker.kis_orders(start)
        positions, balance = broker.account()
    except Exception as exc:  # unreachable (BrokerError), misconfigured: trading stays off
        message = getattr(exc, "message", None) or str(exc)
        report.unreachable = f"{name} could not be asked: {message}"
        logger.error("Reconciliation with %s failed: %s", name, message)
        sync_record(
            broker=name, status=report.status, reason=report.reason, report=report.as_dict()
        )
        return report

    account_created = not services.Account.objects.filter(broker=name).exists()
    if account_created:
        services.account_ensure(broker=name, initial_cash=balance.cash)
        report.notes.append(f"account {name} created with KIS's cash {balance.cash:,} KRW")

    ids = _rows_by_id(rows)
    ours = {
        o.broker_order_id: o
        for o in Order.objects.filter(broker=name, broker_order_id__in=list(ids))
    }
    waiting = list(
        Order.objects.filter(broker=name, status=OrderStatus.SUBMITTED, broker_order_id="")
        .select_related("symbol")
        .order_by("submitted_at", "id")
    )
    for bid, row in sorted(ids.items(), key=lambda item: (item[1].date, item[1].order_no)):
        order = ours.get(bid)
        if order is None:
            order = _adoptable(waiting, row)
            if order is not None:
                waiting.remove(order)
            else:
                order = _external_order(row, bid)
                if order is None:
                    report.disagreements.append(
                        f"KIS order {row.order_no} ({row.side} {row.quantity} {row.symbol}) is "
                        f"not ours and {row.symbol} is not in stocks_metadata."
                    )
                    continue
                report.external.append(
                    f"KIS order {row.order_no}: {row.side} {row.quantity} {row.symbol} "
                    f"@ {row.price or 'market'} recorded as {order.client_order_id}"
                )
        done, problems = kis_apply_row(order_id=order.pk, row=row, broker_order_id=bid)
        report.applied += done
        report.disagreements += problems

    today = today_kst()
    listed = set(ids)
    for order in Order.objects.filter(broker=name, status__in=OPEN).exclude(broker_order_id=""):
        if order.broker_order_id in listed:
            continue
        day = timezone.localtime(order.created_at, krx.SEOUL).date()
        if day < today:
            services.order_set_status(
                order_id=order.pk,
                to_status=OrderStatus.EXPIRED,
                actor=ACTOR,
                reason=f"Not at KIS any more: a day order of {day} ends with its session.",
            )
            report.applied.append(f"order {order.client_order_id}: EXPIRED (placed {day})")
        else:
            report.disagreements.append(
                f"order {order.client_order_id} ({order.broker_order_id}) is "
                f"{order.status} here but KIS does not list it."
            )
    if waiting:
        report.notes.append(
            f"{len(waiting)} SUBMITTED order(s) not found at KIS "
            f"({', '.join(o.client_order_id for o in waiting[:5])}): recovery sends them."
        )
    for difference in broker_differences(broker=name, positions=positions):
        what = "shares" if difference.field == "quantity" else difference.field.replace("_", " ")
        report.disagreements.append(
            f"position {difference.key}: {what} ours {difference.stored}, "
            f"KIS {difference.expected}."
        )
    account = services.Account.objects.filter(broker=name).first()
    if account is not None and account.cash != balance.cash:
        report.notes.append(
            f"cash ours {account.cash:,.0f} KRW, KIS {balance.cash:,.0f} KRW (D+2); "
            "not a disagreement (fees, deposits)"
        )
    row = sync_record(
        broker=name, status=report.status, reason=report.reason, report=report.as_dict()
    )
    log = logger.info if report.agreed else logger.error
    log(
        "Reconciliation with %s: %s. %s",
        name,
        row.status,
        report.reason or f"{len(report.applied)} applied, {len(report.external)} external.",
        extra={"metadata": {"broker": name, "status": row.status}},
    )
    return report


__all__ = [
    "RefreshResult",
    "SyncReport",
    "broker_reconcile",
    "kis_apply_row",
    "kis_open_orders",
    "kis_refresh",
    "kis_refresh_order",
    "sync_override",
    "sync_override_clear",
    "sync_record",
    "trading_allowed",
]
