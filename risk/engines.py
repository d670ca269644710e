"""The risk engine: watches fills, quotes and the clock; protects open positions, checks the
limits, keeps the trading state, stores `risk_metrics` (DESIGN.md, "Engines").

Consumes:
- `market_data_received`: the newest price of each symbol is noted. For an open position it
  raises the trailing stop's high-water mark (risk.protections, Redis) and is evaluated at once
  against the stop-loss, take-profit and trailing stop, at most once per
  RISK_QUOTE_MIN_INTERVAL_SECONDS per symbol (a quote inside that interval is noted and
  evaluated by the next clock tick, so the newest price is never skipped). An exit goes through
  trading.oms.order_place (risk.protections.exit_place); the same episode and protection is not
  tried again within RISK_EXIT_RETRY_SECONDS (an exit the checks denied is retried after that,
  under a new attempt id).
- `order_executed`: the symbol's position is read again (a new episode restarts its high-water
  mark) and a limits check is run soon.

The clock (every RISK_CHECK_SECONDS, and soon after a fill): `portfolio_figures()` (a few
queries) -> `risk_check()`: each breached limit raises a `risk_alert` (de-duplicated per type
and subject for limits.alert_dedup_seconds, risk.alerts) and, for the loss limits, moves the
trading state: the daily loss limit -> HALTED; the monthly loss limit or max_consecutive_losses
losing sells in a row -> REDUCING (risk.services.trading_state_set(automatic=True)). The state
only ever moves up (ACTIVE < REDUCING < HALTED); an operator who resumes trading after an
automatic halt (or reduce) for a loss limit is not overruled again the same day (month): the
engine looks for its own automatic change since the period began. The streak is counted as the
pre-trade check counts it: losing sell orders since the trading state last changed.
While the state is HALTED, each check cancels the orders still open (`halt_sweep`: what a
halt's own cancels missed, e.g. its process died right after the commit).
Every limits.metrics_interval_seconds, and with every check that raised a new alert, the
history figures (VaR 95, Sharpe, beta, drawdown: risk.metrics over `market_data`) are computed
and a `risk_metrics` row stored.

Crash-only: setup() reads the open positions, their episodes and rebuilds each high-water
mark from Redis and the episode's candles; nothing else is kept in memory that the database
does not have. Handlers catch and log their own errors (qb.engine.risk -> system_logs); a
database outage is left to the runtime.

Settings read (getattr, defaults): RISK_CHECK_SECONDS (5), RISK_QUOTE_MIN_INTERVAL_SECONDS
(0.5), RISK_EXIT_RETRY_SECONDS (30), RISK_LOOKBACK_DAYS (365, for VaR / Sharpe / beta),
RISK_DRAWDOWN_DAYS (30, the snapshots the drawdown is measured over).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping
from decimal import Decimal

import redis.asyncio
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction

from marketdata import krx
from qbsite.engine_base import Engine
from qbsite.engines import DB_ERRORS
from qbsite.events import EventType, envelope_preview
from risk import alerts, metrics, protections, services
from risk.models import RiskMetric, Severity, State, TradingState, TradingStateChange
from trading.brokers import get_broker
from trading.engines.portfolio import QuotePayloadError, parse_quote_event
from trading.models import Account, Order, Position, Trade

logger = logging.getLogger("qb.risk.engine")

ENGINES = {"risk": "risk.engines"}

SOURCE = "risk"
ACTOR = protections.ACTOR
_ZERO = Decimal(0)
_RANK = {State.ACTIVE: 0, State.REDUCING: 1, State.HALTED: 2}
_STREAK_LOOKBACK = dt.timedelta(days=30)


def seoul_start(now: dt.datetime, *, month: bool = False) -> dt.datetime:
    """The start of `now`'s Seoul day (or month), as an aware datetime."""
    day = now.astimezone(krx.SEOUL).date()
    if month:
        day = day.replace(day=1)
    return dt.datetime.combine(day, dt.time(), krx.SEOUL)


# --- the figures (sync: the engine calls them on its database thread) --------------------------

_POSITIONS_SQL = f"""
SELECT p.symbol, p.quantity, p.current_price, p.average_price, s.sector
FROM {Position._meta.db_table} p JOIN stocks_metadata s ON s.symbol = p.symbol
WHERE p.quantity > 0
"""
_REALIZED_SQL = f"""
SELECT COALESCE(SUM(profit_loss) FILTER (WHERE timestamp >= %(day)s), 0),
       COALESCE(SUM(profit_loss), 0)
FROM {Trade._meta.db_table}
WHERE side = 'SELL' AND status <> 'CANCELED' AND profit_loss IS NOT NULL
  AND timestamp >= %(month)s
"""
# Sells grouped by order (as the pre-trade check counts the streak), newest first.
_SALES_SQL = f"""
SELECT SUM(t.profit_loss), MAX(t.id)
FROM {Trade._meta.db_table} t LEFT JOIN {Order._meta.db_table} o ON o.id = t.order_id
WHERE t.side = 'SELL' AND t.status <> 'CANCELED' AND t.profit_loss IS NOT NULL
  AND t.timestamp >= %(since)s - interval '1 day'
GROUP BY COALESCE(t.order_id, -t.id)
HAVING MIN(COALESCE(o.created_at, t.timestamp)) > %(since)s
ORDER BY MAX(t.timestamp) DESC, MAX(t.id) DESC
LIMIT %(cap)s
"""


def _cash() -> Decimal:
    row = Account.objects.filter(broker=get_broker().name).values_list("cash", flat=True).first()
    return row if row is not None else _ZERO


def portfolio_figures(
    *, now: dt.datetime, prices: Mapping[str, Decimal] | None = None, streak_cap: int = 1000
) -> metrics.Figures:
    """The portfolio now: cash (the broker's account), holdings marked at `prices` (the newest
    quotes the engine saw), else their current_price, else their average price; realized PnL
    of the Seoul day and month; the losing streak."""
    prices = prices or {}
    values: dict[str, Decimal] = {}
    sectors: dict[str, str] = {}
    with connection.cursor() as cursor:
        cursor.execute(_POSITIONS_SQL)
        for symbol, quantity, current, average, sector in cursor.fetchall():
            mark = prices.get(symbol) or current or average
            values[symbol] = mark * quantity
            sectors[symbol] = sector
        cursor.execute(
            _REALIZED_SQL, {"day": seoul_start(now), "month": seoul_start(now, month=True)}
        )
        today, month = cursor.fetchone()
        changed = TradingState.objects.filter(pk=1).values_list("changed_at", flat=True).first()
        since = now - _STREAK_LOOKBACK
        if changed is not None and changed > since:
            since = changed
        cursor.execute(_SALES_SQL, {"since": since, "cap": streak_cap})
        streak, last_loss = 0, None
        for pnl, last_id in cursor.fetchall():
            if pnl >= 0:
                break
            streak += 1
            last_loss = last_loss or last_id
    figures = metrics.Figures(
        at=now,
        cash=_cash(),
        values=values,
        sector_of=sectors,
        realized_today=today,
        realized_month=month,
        consecutive_losses=streak,
        last_loss_trade=last_loss,
    )
    figures.daily_pnl = _daily_pnl(figures)
    return figures


def _daily_pnl(figures: metrics.Figures) -> Decimal:
    """The portfolio value now less its value at the day's start: the last snapshot before the
    Seoul day began, else the day's first; the realized PnL of the day when there is none."""
    start = seoul_start(figures.at)
    before = (
        RiskMetric.objects.filter(timestamp__lt=start)
        .order_by("-timestamp")
        .values_list("portfolio_value", flat=True)
        .first()
    )
    if before is None:
        before = (
            RiskMetric.objects.filter(timestamp__gte=start, timestamp__lte=figures.at)
            .order_by("timestamp")
            .values_list("portfolio_value", flat=True)
            .first()
        )
    if before is None:
        return figures.realized_today
    return figures.portfolio_value - before


_CLOSES_SQL = """
SELECT DISTINCT ON (symbol, day) symbol, (time AT TIME ZONE 'Asia/Seoul')::date AS day, close
FROM market_data
WHERE symbol = ANY(%s) AND interval = %s AND time >= %s
ORDER BY symbol, day, time DESC
"""


def daily_closes(symbols, *, since: dt.datetime) -> dict[str, dict[dt.date, Decimal]]:
    """symbol -> {Seoul date: the day's close} from `market_data`: the daily candles, and for
    a symbol with too few of them the last 1-minute close of each day."""
    symbols = sorted(set(symbols))
    result: dict[str, dict[dt.date, Decimal]] = {s: {} for s in symbols}
    for interval in ("1d", "1m"):
        wanted = [s for s in symbols if len(result[s]) <= metrics.MIN_OBSERVATIONS]
        if not wanted:
            break
        found: dict[str, dict[dt.date, Decimal]] = collections.defaultdict(dict)
        with connection.cursor() as cursor:
            cursor.execute(_CLOSES_SQL, [wanted, interval, since])
            for symbol, day, close in cursor.fetchall():
                found[symbol][day] = close
        for symbol in wanted:
            if len(found[symbol]) > len(result[symbol]):
                result[symbol] = dict(found[symbol])
    return result


def history_figures(
    figures: metrics.Figures, *, benchmark: str, lookback_days: int, drawdown_days: int
) -> metrics.Figures:
    """Fill VaR 95, Sharpe, beta (today's holdings over the lookback) and the drawdown (the
    stored snapshots of the last `drawdown_days` and now) into `figures`."""
    since = figures.at - dt.timedelta(days=lookback_days)
    closes = daily_closes([*figures.values, benchmark], since=since)
    returns = {s: metrics.daily_returns(c) for s, c in closes.items()}
    simulation = metrics.simulate(figures.values, returns, figures.portfolio_value)
    figures.var_95 = metrics.historical_var(simulation.pnl) if figures.values else _ZERO
    figures.sharpe_ratio = metrics.sharpe_ratio(simulation.returns)
    figures.beta = metrics.beta(
        dict(zip(simulation.days, simulation.returns.tolist(), strict=True)),
        returns.get(benchmark, {}),
    )
    values = list(
        RiskMetric.objects.filter(
            timestamp__gte=figures.at - dt.timedelta(days=drawdown_days), timestamp__lt=figures.at
        )
        .order_by("timestamp")
        .values_list("portfolio_value", flat=True)
    )
    figures.max_drawdown = metrics.max_drawdown([*values, figures.portfolio_value])
    return figures


def metrics_store(figures: metrics.Figures) -> RiskMetric:
    """The figures as a risk_metrics row."""
    return RiskMetric.objects.create(
        timestamp=figures.at,
        portfolio_value=metrics.money(max(figures.portfolio_value, _ZERO)),
        daily_pnl=metrics.money(figures.daily_pnl),
        var_95=figures.var_95,
        max_drawdown=metrics.ratio_decimal(figures.max_drawdown),
        sharpe_ratio=metrics.ratio_decimal(figures.sharpe_ratio),
        beta=metrics.ratio_decimal(figures.beta),
    )


def metrics_snapshot(*, now: dt.datetime, prices=None) -> RiskMetric:
    """Compute every figure now and store a risk_metrics row (the command and the engine)."""
    limits = services.limits_get()
    figures = portfolio_figures(now=now, prices=prices)
    history_figures(
        figures,
        benchmark=limits.benchmark_symbol,
        lookback_days=int(getattr(settings, "RISK_LOOKBACK_DAYS", 365)),
        drawdown_days=int(getattr(settings, "RISK_DRAWDOWN_DAYS", 30)),
    )
    return metrics_store(figures)


# --- limits and the trading state -------------------------------------------------------------


def state_escalate(breach: alerts.Breach, *, now: dt.datetime) -> str:
    """Move the trading state as `breach` calls for; returns the action taken, in words."""
    target = breach.state
    current = services.trading_state_get()  # unlocked first: a breach lasts many ticks
    if _RANK[current] >= _RANK[target]:
        return f"Trading already {current}."
    # Decided and written under the state row's lock: an operator's (or another engine's)
    # change made meanwhile is seen, never overwritten by a lower state read before it.
    with transaction.atomic():
        current = services.trading_state_lock().state
        if _RANK[current] >= _RANK[target]:
            return f"Trading already {current}."
        if breach.alert_type in (alerts.AlertType.DAILY_LOSS, alerts.AlertType.MONTHLY_LOSS):
            period = seoul_start(now, month=breach.alert_type == alerts.AlertType.MONTHLY_LOSS)
            overruled = TradingStateChange.objects.filter(
                automatic=True,
                actor=ACTOR,
                to_state=target,
                reason__startswith=f"{breach.alert_type}:",
                at__gte=period,
            ).exists()
            if overruled:
                return (
                    f"None: trading was set to {target} for this breach before and an operator "
                    f"resumed it ({current})."
                )
        services.trading_state_set(
            state=target,
            actor=ACTOR,
            reason=f"{breach.alert_type}: {breach.message}",
            automatic=True,
            at=now,
        )
    return f"Trading state {current} -> {target}."


def risk_check(*, figures: metrics.Figures, limits, now: dt.datetime) -> list:
    """Raise the alerts of every breached limit (de-duplicated) and move the trading state;
    returns the alerts raised now."""
    raised = []
    for breach in alerts.limit_breaches(figures, limits):
        action = "Alert only."
        if breach.state is not None:
            action = state_escalate(breach, now=now)
        alert = alerts.breach_raise(
            breach, action_taken=action, dedup_seconds=limits.alert_dedup_seconds, at=now
        )
        if alert is not None:
            raised.append(alert)
    return raised


def halt_sweep() -> int:
    """While HALTED, cancel the orders still open: a halt cancels them when it commits, but a
    process that died right after that commit, or a cancel request that failed, would leave
    one the broker may fill (recovery only re-sends cancels already requested)."""
    row = TradingState.objects.filter(pk=1).values_list("state", "reason").first()
    if row is None or row[0] != State.HALTED:
        return 0
    return services.cancel_open_orders(actor=ACTOR, reason=row[1])


# --- protections (sync parts) -----------------------------------------------------------------


def high_water_rebuild(holding: protections.Holding) -> Decimal:
    """The highest price of the episode as the ledger and market_data know it (a floor for
    the Redis value after a restart): the average price, or a higher close since the entry."""
    high = protections.episode_high_close(holding.symbol, holding.opened_at)
    return max(holding.average_price, high or _ZERO)


def protection_exit(
    *, holding: protections.Holding, exit: protections.Exit, now: dt.datetime
) -> protections.ExitResult:
    """Place the exit, then raise its alert (and the guard's)."""
    limits = services.limits_get()
    result = protections.exit_place(holding=holding, exit=exit, limits=limits, now=now)
    if not result.orders:
        return result
    orders = ", ".join(
        f"{o.client_order_id} {o.quantity} {o.status}"
        + (f" ({o.reason_code})" if o.reason_code else "")
        for o in result.orders
    )
    action = f"MARKET SELL of {result.free} shares: {orders}."
    for lock in result.locks:
        action += f" {lock.kind} lock until {lock.until.astimezone(krx.SEOUL):%H:%M:%S} KST."
    alerts.alert_raise(
        alert_type=exit.kind,
        severity=Severity.WARNING,
        message=exit.describe(holding.symbol),
        symbol=holding.symbol,
        subject=f"{holding.symbol}:{holding.episode}",
        current_value=exit.price,
        limit_value=exit.trigger,
        action_taken=action,
        details={"episode": holding.episode, "high_water": exit.high_water},
        dedup_seconds=limits.alert_dedup_seconds,
        at=now,
    )
    for lock in result.locks:
        if lock.kind != "STOPLOSS_GUARD":
            continue
        alerts.alert_raise(
            alert_type=alerts.AlertType.STOPLOSS_GUARD,
            severity=Severity.CRITICAL,
            message=lock.reason,
            symbol=lock.symbol_id,
            subject=f"{lock.symbol_id or ''}:{lock.strategy_id or ''}",
            current_value=None,
            limit_value=Decimal(limits.stoploss_guard_count),
            action_taken=f"Buys locked until {lock.until.astimezone(krx.SEOUL):%H:%M:%S} KST "
            f"(lock {lock.pk}).",
            dedup_seconds=limits.alert_dedup_seconds,
            at=now,
        )
    return result


# --- the engine --------------------------------------------------------------------------------


class RiskEngine(Engine):
    name = "risk"
    subscribes = (EventType.MARKET_DATA_RECEIVED, EventType.ORDER_EXECUTED)
    has_loop = True

    def __init__(self, *, clock=None) -> None:
        super().__init__()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.check_seconds = float(getattr(settings, "RISK_CHECK_SECONDS", 5))
        self.quote_interval = float(getattr(settings, "RISK_QUOTE_MIN_INTERVAL_SECONDS", 0.5))
        self.exit_retry = float(getattr(settings, "RISK_EXIT_RETRY_SECONDS", 30))
        self.limits = None
        self.holdings: dict[str, protections.Holding] = {}
        self.high: dict[str, Decimal] = {}
        self.prices: dict[str, Decimal] = {}
        self.evaluated: dict[str, float] = {}  # symbol -> monotonic time of its last evaluation
        self.noted: set[str] = set()  # quotes inside the interval, for the next tick
        self.tried: dict[tuple[str, int, str], float] = {}  # exits tried: monotonic time
        self.metrics_at: float | None = None
        self.counts: collections.Counter = collections.Counter()
        self.redis = None
        self._hwm = None
        self._wake = asyncio.Event()
        self._checking = asyncio.Lock()

    # --- start-up ---

    async def setup(self) -> None:
        self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        self._hwm = self.redis.register_script(protections.HWM_SCRIPT)
        self.limits = await database_sync_to_async(services.limits_get)()
        holdings = await database_sync_to_async(protections.holdings_open)()
        self.holdings = {}
        for holding in holdings.values():
            await self._track(holding)
        self.log.info("Risk engine ready: %d open position(s).", len(self.holdings))

    async def _track(self, holding: protections.Holding) -> None:
        floor = await database_sync_to_async(high_water_rebuild)(holding)
        self.holdings[holding.symbol] = holding
        self.high[holding.symbol] = await self._raise_high(holding, floor)

    async def _raise_high(self, holding: protections.Holding, price: Decimal) -> Decimal:
        high = await self._hwm(
            keys=[protections.hwm_key(holding.symbol)], args=[str(holding.episode), str(price)]
        )
        return Decimal(high.decode() if isinstance(high, bytes) else high)

    # --- events ---

    async def handle(self, envelope: dict) -> None:
        kind = envelope.get("event_type") if isinstance(envelope, Mapping) else None
        try:
            if kind == EventType.MARKET_DATA_RECEIVED:
                await self.on_quote(envelope)
            elif kind == EventType.ORDER_EXECUTED:
                await self.on_fill(envelope)
        except DB_ERRORS:
            raise  # the runtime waits for PostgreSQL
        except QuotePayloadError as exc:
            self.counts["rejected"] += 1
            self.log.warning(
                "Rejected a %s event: %s.",
                kind,
                exc,
                extra={"metadata": {"event": envelope_preview(envelope)}},
            )
        except Exception:
            self.counts["failed"] += 1
            self.log.exception("%s event failed.", kind)

    async def on_quote(self, envelope: Mapping) -> None:
        symbol, price = parse_quote_event(envelope)
        self.prices[symbol] = price
        if symbol not in self.holdings:
            return
        self.counts["quotes"] += 1
        now = time.monotonic()
        if now - self.evaluated.get(symbol, -1e9) < self.quote_interval:
            self.noted.add(symbol)
            return
        await self.protect(symbol)

    async def on_fill(self, envelope: Mapping) -> None:
        data = envelope.get("data")
        symbol = data.get("symbol") if isinstance(data, Mapping) else None
        if not isinstance(symbol, str):
            raise QuotePayloadError(f"data.symbol {symbol!r} is not a KRX symbol")
        self.counts["fills"] += 1
        await self.refresh(symbol)
        self._wake.set()  # a limits check soon

    async def refresh(self, symbol: str) -> None:
        found = await database_sync_to_async(protections.holdings_open)([symbol])
        holding = found.get(symbol)
        if holding is None:
            self.holdings.pop(symbol, None)
            self.high.pop(symbol, None)
            self.noted.discard(symbol)
            return
        known = self.holdings.get(symbol)
        if known is None or known.episode != holding.episode:
            await self._track(holding)
        else:
            self.holdings[symbol] = holding

    async def protect(self, symbol: str) -> protections.ExitResult | None:
        """Evaluate one open position at its newest price; place the exit it calls for."""
        holding, price = self.holdings.get(symbol), self.prices.get(symbol)
        self.noted.discard(symbol)
        if holding is None or price is None or self.limits is None:
            return None
        self.evaluated[symbol] = time.monotonic()
        if price > self.high.get(symbol, _ZERO):
            self.high[symbol] = await self._raise_high(holding, price)
        exit = protections.evaluate(
            average_price=holding.average_price,
            high_water=self.high.get(symbol),
            price=price,
            limits=self.limits,
        )
        if exit is None:
            return None
        key = (symbol, holding.episode, exit.kind)
        if time.monotonic() - self.tried.get(key, -1e9) < self.exit_retry:
            return None
        self.tried[key] = time.monotonic()
        self.counts[f"exits_{exit.kind.lower()}"] += 1
        result = await database_sync_to_async(protection_exit)(
            holding=holding, exit=exit, now=self.clock()
        )
        await self.refresh(symbol)
        return result

    # --- the clock ---

    async def check(self, *, force_metrics: bool = False) -> list:
        """One tick: the limits (alerts, trading state) and, when due, a risk_metrics row."""
        async with self._checking:
            self.limits = await database_sync_to_async(services.limits_get)()
            for symbol in sorted(self.noted):
                await self.protect(symbol)
            now = self.clock()
            prices = dict(self.prices)
            raised = await database_sync_to_async(self._check_sync)(now, prices, force_metrics)
            self.counts["checks"] += 1
            self.counts["alerts"] += len(raised)
            return raised

    def _check_sync(self, now: dt.datetime, prices: dict, force_metrics: bool) -> list:
        limits = self.limits
        figures = portfolio_figures(now=now, prices=prices)
        raised = risk_check(figures=figures, limits=limits, now=now)
        halt_sweep()
        due = (
            self.metrics_at is None
            or time.monotonic() - self.metrics_at >= limits.metrics_interval_seconds
        )
        if raised or due or force_metrics:
            history_figures(
                figures,
                benchmark=limits.benchmark_symbol,
                lookback_days=int(getattr(settings, "RISK_LOOKBACK_DAYS", 365)),
                drawdown_days=int(getattr(settings, "RISK_DRAWDOWN_DAYS", 30)),
            )
            metrics_store(figures)
            self.metrics_at = time.monotonic()
            self.counts["metrics"] += 1
        return raised

    async def loop(self) -> None:
        while not self.stopping.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait(
                [waiter, stopper], timeout=self.check_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()
            self._wake.clear()
            if self.stopping.is_set():
                return
            try:
                await self.check()
            except DB_ERRORS:
                raise
            except Exception:
                self.log.exception("Risk check failed; trying again next tick.")

    def stats(self) -> dict:
        return {"open_positions": len(self.holdings), **self.counts}

    async def stop(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()


__all__ = [
    "ENGINES",
    "RiskEngine",
    "daily_closes",
    "halt_sweep",
    "high_water_rebuild",
    "history_figures",
    "metrics_snapshot",
    "metrics_store",
    "portfolio_figures",
    "protection_exit",
    "risk_check",
    "seoul_start",
    "state_escalate",
]
