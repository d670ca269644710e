"""Reconciliation: do the stored positions and cash equal what the trades add up to?

The invariant (issue 4): a position equals the replay of its trades, and an account's cash
equals its initial cash plus what its trades moved. `differences()` checks both and returns
every mismatch; `manage.py reconcile` prints them and fails when there is any.

Replay. For each symbol, the trades whose status is not CANCELED, in id order, go through
`services.position_apply` (the one place that knows the position arithmetic) into a fresh
position; its quantity, average_price, cost_basis and realized_pnl must equal the stored row's,
and each sell's `profit_loss` must equal what the replay realized on it. The unrealized PnL is
checked against the stored current_price (current_price x quantity - cost_basis).
Why id order and not (timestamp, id): within one symbol, ids are the order in which fills were
applied (a fill inserts its trade while it holds the position's row lock), and the stored
figures were computed in that order. A broker that reports a fill late gives it an earlier
timestamp than fills applied before it; replayed by timestamp, the pro rata cost removed on a
sell would differ by a ten-thousandth of a won and be reported as a false difference.

Cash, per account (broker): initial_cash - sum(buy amount + commission)
+ sum(sell amount - commission - tax) over its trades that are not CANCELED. A trade's account
is its order's broker; trades recorded without an order count toward settings.TRADING_BROKER.

Fixing (`fix_position`, `fix_account`, `manage.py reconcile --fix`): the trades are the ledger,
positions and cash are derived from them, so a fix rewrites the derived rows from the trades,
never the trades (a sell whose profit_loss differs is reported, not changed). Each fix runs in
its own transaction under the same row lock that fills take (position, then separately the
account), and recomputes from the trades *under that lock*: a fill that is being applied
meanwhile either committed before (its trade is seen) or waits for the lock and applies its
change on top of the fixed row. So a fix is safe while the engines run. It is still an
operator's decision: a missing trade also shows up as a position "too big", and rewriting the
position hides that. Every fix is logged (WARNING, qb.trading.reconcile -> system_logs).

Against the broker (`against_broker()`, `manage.py reconcile --broker`): the stored positions and
cash against what the broker reports (Broker.positions(), Broker.balance()). The comparison,
`broker_differences(positions=..., cash=...)`, takes the broker's figures as plain values, so
the KIS broker (or a test) feeds it the same way. With KIS, `manage.py reconcile --broker kis`
runs trading.broker_sync.broker_reconcile instead (orders and fills too, stored, and the
refuse-to-trade state), which uses broker_differences for the positions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DecimalField, F, Sum, Value, When
from django.db.models.functions import Coalesce

from .brokers import get_broker
from .brokers.base import BrokerPosition
from .models import Account, Position, Side, Trade, TradeStatus
from .services import FillError, position_apply

logger = logging.getLogger("qb.trading.reconcile")

_ZERO = Decimal(0)
_PLACES = Decimal("0.0001")
POSITION_FIELDS = ("quantity", "average_price", "cost_basis", "realized_pnl", "unrealized_pnl")
_TRADE_FIELDS = ("id", "symbol_id", "side", "quantity", "price", "commission", "tax", "profit_loss")


@dataclass(frozen=True)
class Difference:
    """One stored figure that is not what the ledger says."""

    kind: str  # "position", "trade", "account" or "broker"
    key: str  # the symbol, "symbol trade #id", or the broker
    field: str
    stored: object
    expected: object
    note: str = ""

    def __str__(self) -> str:
        text = (
            f"{self.kind} {self.key} {self.field}: stored {_show(self.stored)}, "
            f"expected {_show(self.expected)}"
        )
        return f"{text} ({self.note})" if self.note else text


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal):
        return str(value.quantize(_PLACES))
    return str(value)


# --- positions -----------------------------------------------------------------------------


@dataclass
class Replay:
    """A position rebuilt from its trades, and what went wrong on the way."""

    position: Position
    differences: list[Difference]


def _live_trades():
    return Trade.objects.exclude(status=TradeStatus.CANCELED)


def replay_trades(symbol: str, trades: Iterable, *, current_price=None) -> Replay:
    """Rebuild `symbol`'s position from `trades` (objects with the Trade fields, in the order
    applied). Each sell's stored profit_loss is compared with what the replay realized."""
    position = Position(symbol_id=symbol, current_price=current_price)
    problems: list[Difference] = []
    for trade in trades:
        try:
            realized = position_apply(
                position,
                side=trade.side,
                quantity=trade.quantity,
                price=trade.price,
                commission=trade.commission,
                tax=trade.tax,
            )
        except FillError as exc:
            # A sell of more than the replay holds: the ledger itself is inconsistent.
            problems.append(
                Difference(
                    "trade",
                    f"{symbol} #{trade.id}",
                    "quantity",
                    trade.quantity,
                    position.quantity,
                    note=f"sells more than held: {exc.message}",
                )
            )
            continue
        if trade.side == Side.SELL and trade.profit_loss != realized:
            problems.append(
                Difference("trade", f"{symbol} #{trade.id}", "profit_loss", trade.profit_loss,
                           realized)
            )  # fmt: skip
    return Replay(position, problems)


def _compare(stored: Position | None, expected: Position) -> list[Difference]:
    symbol = expected.symbol_id
    if stored is None:
        if expected.quantity == 0 and expected.realized_pnl == 0:
            return []
        return [Difference("position", symbol, "row", None, "present", note="no positions row")]
    found = []
    for name in POSITION_FIELDS:
        have, want = getattr(stored, name), getattr(expected, name)
        if have != want:
            found.append(Difference("position", symbol, name, have, want))
    return found


def position_differences(symbols: Iterable[str] | None = None) -> list[Difference]:
    """Every position (and every symbol with trades) against the replay of its trades."""
    positions = Position.objects.all()
    trades = _live_trades().only(*_TRADE_FIELDS).order_by("symbol_id", "id")
    if symbols is not None:
        symbols = list(symbols)
        positions = positions.filter(symbol_id__in=symbols)
        trades = trades.filter(symbol_id__in=symbols)
    stored = {p.symbol_id: p for p in positions}
    by_symbol: dict[str, list] = {}
    for trade in trades.iterator(chunk_size=5000):
        by_symbol.setdefault(trade.symbol_id, []).append(trade)
    found: list[Difference] = []
    for symbol in sorted(set(stored) | set(by_symbol)):
        row = stored.get(symbol)
        replay = replay_trades(
            symbol, by_symbol.get(symbol, ()), current_price=row.current_price if row else None
        )
        found += replay.differences
        found += _compare(row, replay.position)
    return found


# --- cash ----------------------------------------------------------------------------------


def _default_broker() -> str:
    return getattr(settings, "TRADING_BROKER", "paper")


def cash_moved_by_trades() -> dict[str, Decimal]:
    """broker -> the net cash its trades moved (sells in, buys and fees out). One query."""
    money = DecimalField(max_digits=30, decimal_places=4)
    amount = F("price") * F("quantity")
    delta = Case(
        When(side=Side.BUY, then=-(amount + F("commission"))),
        default=amount - F("commission") - F("tax"),
        output_field=money,
    )
    rows = (
        _live_trades()
        .annotate(account=Coalesce("order__broker", Value(_default_broker())))
        .values("account")
        .annotate(moved=Sum(delta, output_field=money))
        .order_by("account")
    )
    return {row["account"]: row["moved"] for row in rows}


def account_differences() -> list[Difference]:
    moved = cash_moved_by_trades()
    accounts = {a.broker: a for a in Account.objects.all()}
    found = []
    for broker in sorted(set(accounts) | set(moved)):
        account = accounts.get(broker)
        if account is None:
            found.append(
                Difference("account", broker, "row", None, "present", note="trades, no account")
            )
            continue
        expected = account.initial_cash + moved.get(broker, _ZERO)
        if account.cash != expected:
            found.append(Difference("account", broker, "cash", account.cash, expected))
    return found


def differences(symbols: Iterable[str] | None = None) -> list[Difference]:
    """Positions and trades (of `symbols`, or all), then every account's cash."""
    return position_differences(symbols) + account_differences()


# --- against the broker (KIS issue) ---------------------------------------------------------


def broker_differences(
    *, broker: str, positions: Iterable[BrokerPosition], cash: Decimal | None = None
) -> list[Difference]:
    """Stored positions and cash against the broker's own figures (Broker.positions(),
    Broker.balance().cash; trading/brokers/base.py).

    Symbols held on one side only are differences too. The average price is compared to the
    won (brokers round it), and only where the broker reports one.
    """
    theirs: dict[str, BrokerPosition] = {}
    for holding in positions:
        theirs[holding.symbol] = holding
    ours = {p.symbol_id: p for p in Position.objects.filter(quantity__gt=0)}
    found = []
    for symbol in sorted(set(ours) | set(theirs)):
        mine, their = ours.get(symbol), theirs.get(symbol)
        quantity, their_quantity = (mine.quantity if mine else 0), (their.quantity if their else 0)
        if quantity != their_quantity:
            found.append(Difference("broker", symbol, "quantity", quantity, their_quantity))
        elif mine and their.average_price is not None:
            have = mine.average_price.quantize(Decimal(1))
            want = Decimal(their.average_price).quantize(Decimal(1))
            if have != want:
                found.append(Difference("broker", symbol, "average_price", have, want))
    if cash is not None:
        account = Account.objects.filter(broker=broker).first()
        stored = account.cash if account else None
        if stored != cash:
            found.append(Difference("broker", broker, "cash", stored, cash))
    return found


def against_broker(name: str | None = None) -> list[Difference]:
    """broker_differences() with the figures the broker itself reports (BrokerError when it
    cannot be reached). For the paper broker, which keeps its book in our own tables, this is
    a check of the plumbing; with KIS it compares two independent books."""
    broker = get_broker(name)
    return broker_differences(
        broker=broker.name, positions=broker.positions(), cash=broker.balance().cash
    )


# --- fixing (derived rows only, from the trades, under the fill path's locks) -----------------


def fix_position(*, symbol: str) -> list[Difference]:
    """Rewrite `symbol`'s position from its trades; returns what changed (empty: nothing)."""
    with transaction.atomic():
        Position.objects.bulk_create([Position(symbol_id=symbol)], ignore_conflicts=True)
        row = Position.objects.select_for_update().get(symbol_id=symbol)
        trades = _live_trades().filter(symbol_id=symbol).only(*_TRADE_FIELDS).order_by("id")
        replay = replay_trades(symbol, trades, current_price=row.current_price)
        changed = _compare(row, replay.position)
        if not changed:
            return []
        for name in POSITION_FIELDS:
            setattr(row, name, getattr(replay.position, name))
        row.save()
    for difference in changed:
        logger.warning("reconcile --fix: %s", difference, extra={"metadata": {"symbol": symbol}})
    return changed


def fix_account(*, broker: str) -> list[Difference]:
    """Set `broker`'s cash to what its trades say; returns what changed."""
    with transaction.atomic():
        account = Account.objects.select_for_update().filter(broker=broker).first()
        if account is None:
            return []
        # Under the account lock: fills that have not committed yet apply on top of this.
        expected = account.initial_cash + cash_moved_by_trades().get(broker, _ZERO)
        if account.cash == expected:
            return []
        changed = [Difference("account", broker, "cash", account.cash, expected)]
        account.cash = expected
        account.save(update_fields=["cash", "updated_at"])
    logger.warning("reconcile --fix: %s", changed[0], extra={"metadata": {"broker": broker}})
    return changed


def fix(found: Iterable[Difference]) -> list[Difference]:
    """Fix the positions and accounts named in `found`; returns the changes made."""
    changes: list[Difference] = []
    symbols = sorted({d.key for d in found if d.kind == "position"})
    brokers = sorted({d.key for d in found if d.kind == "account" and d.field == "cash"})
    for symbol in symbols:
        changes += fix_position(symbol=symbol)
    for broker in brokers:
        changes += fix_account(broker=broker)
    return changes


__all__ = [
    "Difference",
    "account_differences",
    "against_broker",
    "broker_differences",
    "cash_moved_by_trades",
    "differences",
    "fix",
    "fix_account",
    "fix_position",
    "position_differences",
    "replay_trades",
]
