"""KRX market rules: tick sizes, daily price limits, sessions and trading days, taxes and fees.

The one home of these rules (STYLE.md): feeds, validation, brokers, risk checks and backtests
import them from here. Facts are from shared/reference/KRX.md (gathered 2026-11); each rule
says from when it holds, so a backtest over an older period gets that period's rule or a clear
error, never today's rule silently.

Everything is pure: no wall clock and no I/O. The one exception is the XKRX trading calendar
from `exchange_calendars`, built once per process on first use (about 3-5 s and ~75 MB of
pandas/numpy, offline) and then reduced to plain Python sets and dicts, so per-call lookups
cost microseconds. Processes that only need ticks, limits or costs never import pandas.

Settings read (all optional, with getattr defaults; this module works without Django):
KRX_COMMISSION_RATE, KRX_CALENDAR_START, KRX_CALENDAR_END, KRX_EXTRA_HOLIDAYS.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import threading
import warnings
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

from qbsite.exceptions import InvalidInput

SEOUL = ZoneInfo("Asia/Seoul")


class KRXRuleError(InvalidInput):
    """A KRX rule was asked about something it does not cover (bad value, date out of range)."""

    code = "krx_rule"


def _setting(name: str, default):
    """A Django setting if Django is configured, else the default (backtests, scripts)."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        return getattr(settings, name, default)
    except ImproperlyConfigured:
        return default


def _decimal(value, what: str) -> Decimal:
    # Floats are refused: 0.1 + 0.2 is not a price. ints are exact, so they are accepted.
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise KRXRuleError(
            f"{what} must be a Decimal (or int) amount of KRW, "
            f"got {type(value).__name__} {value!r}."
        )
    number = Decimal(value)
    if not number.is_finite():
        raise KRXRuleError(f"{what} must be a finite number, got {value!r}.")
    return number


def _positive(value, what: str) -> Decimal:
    number = _decimal(value, what)
    if number <= 0:
        raise KRXRuleError(f"{what} must be greater than 0, got {number}.")
    return number


# --- Tick sizes ----------------------------------------------------------------------------
# KOSPI and KOSDAQ share one table since 2023-01-25. Rows: (lowest price of the band, tick).
# Each band's lower bound is a multiple of the tick below it, so rounding within one band
# always lands on the grid of the band it ends up in.
TICK_TABLE_SINCE = dt.date(2023, 1, 25)
STOCK_TICKS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal(0), Decimal(1)),
    (Decimal(2_000), Decimal(5)),
    (Decimal(5_000), Decimal(10)),
    (Decimal(20_000), Decimal(50)),
    (Decimal(50_000), Decimal(100)),
    (Decimal(200_000), Decimal(500)),
    (Decimal(500_000), Decimal(1_000)),
)
_STOCK_BOUNDS = [bound for bound, _ in STOCK_TICKS]
# ETF, ETN and ELW: one tick at every price (KRX.md).
FUND_TICK = Decimal(5)
INSTRUMENTS = ("stock", "etf", "etn", "elw")


def _check_instrument(instrument: str) -> None:
    if instrument not in INSTRUMENTS:
        raise KRXRuleError(f"instrument={instrument!r} is not one of: {', '.join(INSTRUMENTS)}.")


def tick_size(price: Decimal, *, instrument: str = "stock") -> Decimal:
    """The price increment KRX accepts at `price` (KRW)."""
    _check_instrument(instrument)
    price = _positive(price, "price")
    if instrument != "stock":
        return FUND_TICK
    return STOCK_TICKS[bisect.bisect_right(_STOCK_BOUNDS, price) - 1][1]


def is_on_tick(price: Decimal, *, instrument: str = "stock") -> bool:
    """True if `price` is a price KRX accepts (> 0 and a whole multiple of its tick)."""
    price = _decimal(price, "price")
    if price <= 0:
        return False
    return price % tick_size(price, instrument=instrument) == 0


_ROUNDINGS = {"down": ROUND_FLOOR, "up": ROUND_CEILING}


def round_to_tick(price: Decimal, direction: str, *, instrument: str = "stock") -> Decimal:
    """The nearest accepted price at or below ("down"), at or above ("up") or either ("nearest").

    "nearest" breaks an exact tie upwards. `price` may have a fraction (a computed limit).
    """
    price = _positive(price, "price")
    if direction == "nearest":
        below = round_to_tick(price, "down", instrument=instrument)
        above = round_to_tick(price, "up", instrument=instrument)
        return below if price - below < above - price else above
    if direction not in _ROUNDINGS:
        raise KRXRuleError(f"direction={direction!r} is not one of: down, up, nearest.")
    tick = tick_size(price, instrument=instrument)
    rounded = (price / tick).to_integral_value(rounding=_ROUNDINGS[direction]) * tick
    if rounded <= 0:
        raise KRXRuleError(f"No accepted price at or below {price}: the lowest is {tick}.")
    return rounded


# --- Daily price limits --------------------------------------------------------------------
# +-30% of the base price (the previous close) since 2015-06-15 for KOSPI, KOSDAQ, ETF, ETN;
# KONEX kept +-15%. Earlier dates are not modelled (they were 15%, and KOSDAQ 12% before 2005).
PRICE_LIMIT_SINCE = dt.date(2015, 6, 15)
PRICE_LIMIT_RATE = Decimal("0.30")
PRICE_LIMIT_RATE_BY_MARKET = {"KONEX": Decimal("0.15")}


@dataclass(frozen=True)
class PriceLimits:
    lower: Decimal
    upper: Decimal

    def __contains__(self, price) -> bool:
        return self.lower <= _decimal(price, "price") <= self.upper


def price_limits(
    prev_close: Decimal, *, instrument: str = "stock", market: str | None = None
) -> PriceLimits:
    """The lowest and highest prices allowed today, from the previous close (the base price).

    How KRX computes them, as we understand its enforcement rules (from memory, not checked
    against the text here): the limit width is base x rate with anything below the base
    price's tick cut off; upper = base + width and lower = base - width, then the upper limit
    is rounded down and the lower limit up onto the tick grid of the band each falls in.
    This equals plain "base x 1.3 rounded down / base x 0.7 rounded up" except where the lower
    limit falls in a band with a finer tick (base 60,200: 42,200 here, 42,150 the plain way).
    """
    _check_instrument(instrument)
    base = _positive(prev_close, "prev_close")
    rate = PRICE_LIMIT_RATE_BY_MARKET.get(market, PRICE_LIMIT_RATE) if market else PRICE_LIMIT_RATE
    base_tick = tick_size(base, instrument=instrument)
    width = (base * rate / base_tick).to_integral_value(rounding=ROUND_FLOOR) * base_tick
    upper = round_to_tick(base + width, "down", instrument=instrument)
    lower_raw = base - width
    # A base of a few won can leave a width of 0: the price simply cannot move that day.
    lower = round_to_tick(lower_raw, "up", instrument=instrument) if lower_raw > 0 else base_tick
    return PriceLimits(lower=lower, upper=upper)


def within_band(
    price: Decimal, prev_close: Decimal, *, instrument: str = "stock", market: str | None = None
) -> bool:
    """True if `price` lies within today's limits (limits included)."""
    return price in price_limits(prev_close, instrument=instrument, market=market)


# --- Sessions ------------------------------------------------------------------------------
class Session(enum.Flag):
    """What KRX is doing at a moment. Some overlap (08:30-08:40: the opening auction takes
    orders while pre-market closing-price trades happen), so session_at() returns flags:
    test with `Session.CONTINUOUS in s`, and `not s` for closed."""

    CLOSED = 0
    PRE_MARKET_CLOSING_PRICE = enum.auto()  # 08:30-08:40, at the previous close
    OPENING_AUCTION = enum.auto()  # 08:30-09:00, single price at 09:00
    CONTINUOUS = enum.auto()  # 09:00-15:20
    CLOSING_AUCTION = enum.auto()  # 15:20-15:30, single price at 15:30
    POST_MARKET_CLOSING_PRICE = enum.auto()  # 15:40-16:00, at today's close
    AFTER_HOURS_SINGLE_PRICE = enum.auto()  # 16:00-18:00, every 10 min, +-10%
    REGULAR = CONTINUOUS | CLOSING_AUCTION  # 09:00-15:30: the regular session


# Offsets from the regular open and close; with these, a day whose open or close KRX moves
# (first trading day of the year: open 10:00; exam day: everything an hour later) moves the
# sessions that hang off it. Valid since 2016-08-01, when the close moved to 15:30.
SESSION_RULES_SINCE = dt.date(2016, 8, 1)
_PRE_MARKET_START = dt.timedelta(minutes=-30)  # before the open
_PRE_MARKET_END = dt.timedelta(minutes=-20)
_CLOSING_AUCTION = dt.timedelta(minutes=10)  # before the close
_POST_MARKET_START = dt.timedelta(minutes=10)  # after the close
_POST_MARKET_END = dt.timedelta(minutes=30)
# The single-price session ends at 18:00 even when the close is late (exam day: 17:00-18:00).
_AFTER_HOURS_END = dt.time(18, 0)

# Days exchange_calendars 4.13.2 gets wrong, in either direction. Ad hoc holidays it lacks:
KNOWN_EXTRA_HOLIDAYS = frozenset(
    {
        dt.date(2026, 6, 3),  # 9th local elections (first Wednesday of June, by law)
        dt.date(2028, 4, 12),  # 23rd National Assembly election (statutory date)
    }
)
# The college entrance exam (CSAT) days when KRX opens and closes an hour late: the package
# lists them only up to 2020.
KNOWN_LATE_DAYS = frozenset(
    {
        dt.date(2021, 11, 18),
        dt.date(2022, 11, 17),
        dt.date(2023, 11, 16),
        dt.date(2024, 11, 14),
        dt.date(2025, 11, 13),
    }
)
_LATE_BY = dt.timedelta(hours=1)

# A fixed default range keeps answers independent of the day the process started (the
# package's own default is "20 years ago to a year from now"). Beyond announced holidays,
# future years follow the package's rules; KRX_EXTRA_HOLIDAYS adds new ad hoc ones.
DEFAULT_CALENDAR_START = "2010-01-04"
DEFAULT_CALENDAR_END = "2030-12-31"


def _as_date(value, what: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise KRXRuleError(f"{what} must be a datetime.date, got {type(value).__name__} {value!r}.")
    return value


def _setting_date(name: str, default: str) -> dt.date:
    return _parse_date(name, _setting(name, default))


def _parse_date(name: str, value) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise KRXRuleError(f"{name}={value!r} is not a date (YYYY-MM-DD).") from None


@dataclass(frozen=True)
class _Calendar:
    """The XKRX calendar reduced to plain Python: fast, and no pandas per call."""

    first: dt.date
    last: dt.date
    sessions: tuple[dt.date, ...]  # sorted
    session_set: frozenset[dt.date]
    opens: dict[dt.date, dt.datetime]  # aware, Asia/Seoul
    closes: dict[dt.date, dt.datetime]

    def check(self, day: dt.date) -> None:
        if not self.first <= day <= self.last:
            raise KRXRuleError(
                f"{day} is outside the KRX calendar QB has loaded ({self.first} to {self.last}); "
                "set KRX_CALENDAR_START / KRX_CALENDAR_END to cover it."
            )


_calendar_lock = threading.Lock()
_calendar_cache: list[_Calendar] = []


def _calendar() -> _Calendar:
    """The calendar, built on first use (settings read then) and kept for the process."""
    if not _calendar_cache:
        with _calendar_lock:  # one build even when threads ask at once
            if not _calendar_cache:
                _calendar_cache.append(_build_calendar())
    return _calendar_cache[0]


def _build_calendar() -> _Calendar:
    # Imported here: pandas is heavy, and many processes only need ticks and costs.
    from exchange_calendars.exchange_calendar_xkrx import XKRXExchangeCalendar

    start = _setting_date("KRX_CALENDAR_START", DEFAULT_CALENDAR_START)
    end = _setting_date("KRX_CALENDAR_END", DEFAULT_CALENDAR_END)
    extra = set(KNOWN_EXTRA_HOLIDAYS)
    extra.update(_parse_date("KRX_EXTRA_HOLIDAYS", v) for v in _setting("KRX_EXTRA_HOLIDAYS", ()))
    try:
        with warnings.catch_warnings():
            # The package trips pandas 3.1 deprecation warnings inside; nothing for us to act on.
            warnings.simplefilter("ignore")
            xkrx = XKRXExchangeCalendar(start=start.isoformat(), end=end.isoformat())
            opens_utc, closes_utc = list(xkrx.opens), list(xkrx.closes)
    except ValueError as exc:  # the package's own bounds
        raise KRXRuleError(f"KRX_CALENDAR_START/END {start}..{end}: {exc}") from None
    opens: dict[dt.date, dt.datetime] = {}
    closes: dict[dt.date, dt.datetime] = {}
    for label, open_, close in zip(xkrx.sessions, opens_utc, closes_utc, strict=True):
        day = label.date()
        if day in extra:
            continue
        opens[day] = open_.to_pydatetime().astimezone(SEOUL)
        closes[day] = close.to_pydatetime().astimezone(SEOUL)
        if day in KNOWN_LATE_DAYS and opens[day].time() == dt.time(9, 0):
            opens[day] += _LATE_BY
            closes[day] += _LATE_BY
    sessions = tuple(sorted(opens))
    return _Calendar(
        first=start,
        last=end,
        sessions=sessions,
        session_set=frozenset(sessions),
        opens=opens,
        closes=closes,
    )


def is_trading_day(day: dt.date) -> bool:
    """True if KRX trades on `day` (weekends, holidays, May 1 and Dec 31 are not)."""
    day = _as_date(day, "day")
    calendar = _calendar()
    calendar.check(day)
    return day in calendar.session_set


def _seoul(moment: dt.datetime) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        raise KRXRuleError(f"Expected a datetime, got {type(moment).__name__} {moment!r}.")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise KRXRuleError(
            f"{moment.isoformat()} has no time zone: pass an aware datetime (UTC or Asia/Seoul)."
        )
    return moment.astimezone(SEOUL)


def _trading_day(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    day = _as_date(day, "day")
    calendar = _calendar()
    calendar.check(day)
    if day not in calendar.session_set:
        raise KRXRuleError(f"KRX does not trade on {day} ({day:%A}).")
    return calendar.opens[day], calendar.closes[day]


def session_open(day: dt.date) -> dt.datetime:
    """When the regular session opens on trading day `day` (aware, Asia/Seoul)."""
    return _trading_day(day)[0]


def session_close(day: dt.date) -> dt.datetime:
    """When the regular session closes on trading day `day` (aware, Asia/Seoul)."""
    return _trading_day(day)[1]


def session_at(moment: dt.datetime) -> Session:
    """What KRX is doing at `moment` (aware). Intervals are [start, end)."""
    local = _seoul(moment)
    day = local.date()
    if day < SESSION_RULES_SINCE:
        raise KRXRuleError(
            f"Session details before {SESSION_RULES_SINCE} are not modelled ({local.isoformat()}); "
            "is_open() covers regular hours for earlier dates."
        )
    calendar = _calendar()
    calendar.check(day)
    if day not in calendar.session_set:
        return Session.CLOSED
    open_, close = calendar.opens[day], calendar.closes[day]
    auction_start = open_ + _PRE_MARKET_START
    closing_auction = close - _CLOSING_AUCTION
    post_start, post_end = close + _POST_MARKET_START, close + _POST_MARKET_END
    after_hours_end = dt.datetime.combine(day, _AFTER_HOURS_END, SEOUL)

    state = Session.CLOSED
    if auction_start <= local < open_ + _PRE_MARKET_END:
        state |= Session.PRE_MARKET_CLOSING_PRICE
    if auction_start <= local < open_:
        state |= Session.OPENING_AUCTION
    if open_ <= local < closing_auction:
        state |= Session.CONTINUOUS
    if closing_auction <= local < close:
        state |= Session.CLOSING_AUCTION
    if post_start <= local < post_end:
        state |= Session.POST_MARKET_CLOSING_PRICE
    if post_end <= local < after_hours_end:
        state |= Session.AFTER_HOURS_SINGLE_PRICE
    return state


def is_open(moment: dt.datetime) -> bool:
    """True during the regular session (open <= moment < close, continuous + closing auction)."""
    local = _seoul(moment)
    calendar = _calendar()
    calendar.check(local.date())
    day = local.date()
    if day not in calendar.session_set:
        return False
    return calendar.opens[day] <= local < calendar.closes[day]


def next_open(moment: dt.datetime) -> dt.datetime:
    """The first regular-session open strictly after `moment` (aware, Asia/Seoul)."""
    local = _seoul(moment)
    calendar = _calendar()
    calendar.check(local.date())
    index = bisect.bisect_left(calendar.sessions, local.date())
    for day in calendar.sessions[index : index + 2]:
        if calendar.opens[day] > local:
            return calendar.opens[day]
    raise KRXRuleError(
        f"No KRX session after {local.isoformat()} within the loaded calendar "
        f"(ends {calendar.last}); set KRX_CALENDAR_END to extend it."
    )


def settlement_date(trade_date: dt.date) -> dt.date:
    """T+2: the second KRX trading day after `trade_date` (itself a trading day)."""
    _trading_day(trade_date)
    calendar = _calendar()
    index = bisect.bisect_left(calendar.sessions, trade_date) + 2
    if index >= len(calendar.sessions):
        raise KRXRuleError(
            f"The settlement day of {trade_date} is past the loaded calendar "
            f"(ends {calendar.last}); set KRX_CALENDAR_END to extend it."
        )
    return calendar.sessions[index]


# --- Costs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SellTax:
    """Sell-side tax rates on the sale amount: securities transaction tax + special rural tax."""

    transaction: Decimal
    rural: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.transaction + self.rural


# Keyed by the first SETTLEMENT day each row applies to: the tax falls due on the transfer,
# which is settlement (T+2). So the 2019 cut applied to settlements from 2019-06-03, i.e.
# trades from 2019-05-30, as the Ministry of Economy and Finance announced at the time.
# KOSPI carries the 0.15% rural tax on top; KOSDAQ and KONEX do not. ETF sales are exempt
# from the securities transaction tax. Before 2019-06-03 the rates had held since 1996
# (KOSPI 0.15% + 0.15%, KOSDAQ 0.30%, KONEX 0.30% from its opening on 2013-07-01).
SELL_TAX_TABLE: tuple[tuple[dt.date, dict[str, SellTax]], ...] = (
    (
        dt.date(2010, 1, 1),
        {
            "KOSPI": SellTax(Decimal("0.0015"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0030")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2013, 7, 1),
        {
            "KOSPI": SellTax(Decimal("0.0015"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0030")),
            "KONEX": SellTax(Decimal("0.0030")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2019, 6, 3),
        {
            "KOSPI": SellTax(Decimal("0.0010"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0025")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2021, 1, 1),
        {
            "KOSPI": SellTax(Decimal("0.0008"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0023")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2023, 1, 1),
        {
            "KOSPI": SellTax(Decimal("0.0005"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0020")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2024, 1, 1),
        {
            "KOSPI": SellTax(Decimal("0.0003"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0018")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2025, 1, 1),
        {
            "KOSPI": SellTax(Decimal(0), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0015")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
    (
        dt.date(2026, 1, 1),
        {
            "KOSPI": SellTax(Decimal("0.0005"), Decimal("0.0015")),
            "KOSDAQ": SellTax(Decimal("0.0020")),
            "KONEX": SellTax(Decimal("0.0010")),
            "ETF": SellTax(Decimal(0)),
        },
    ),
)
_TAX_STARTS = [start for start, _ in SELL_TAX_TABLE]

DEFAULT_COMMISSION_RATE = Decimal("0.00015")  # 0.015% per side, KRX.md; KIS is ~0.0140527%
_WON = Decimal(1)


def sell_tax_rates(market: str, trade_date: dt.date) -> SellTax:
    """The sell-side tax rates for a sale on `trade_date` (looked up by its settlement day)."""
    settles = settlement_date(trade_date)
    index = bisect.bisect_right(_TAX_STARTS, settles) - 1
    if index < 0:
        raise KRXRuleError(
            f"No sell-tax rates before {_TAX_STARTS[0]} (trade {trade_date}, settling {settles})."
        )
    start, rates = SELL_TAX_TABLE[index]
    if market not in rates:
        known = ", ".join(sorted(rates))
        raise KRXRuleError(
            f"No sell-tax rate for market {market!r} on {settles} (from {start}: {known})."
        )
    return rates[market]


def sell_tax_rate(market: str, trade_date: dt.date) -> Decimal:
    """The total sell-side tax rate (0.002 = 0.20%) for a sale in `market` on `trade_date`."""
    return sell_tax_rates(market, trade_date).total


def sell_tax(amount: Decimal, *, market: str, trade_date: dt.date) -> Decimal:
    """Tax on a sale of `amount` KRW. Each tax is truncated to the won on its own, as brokers'
    statements show them (an assumption from KIS statements, not from the statute's text)."""
    amount = _decimal(amount, "amount")
    if amount < 0:
        raise KRXRuleError(f"amount must not be negative, got {amount}.")
    rates = sell_tax_rates(market, trade_date)
    transaction = (amount * rates.transaction).to_integral_value(rounding=ROUND_FLOOR)
    rural = (amount * rates.rural).to_integral_value(rounding=ROUND_FLOOR)
    return (transaction + rural).quantize(_WON)


def commission_rate() -> Decimal:
    """The broker commission per side: settings.KRX_COMMISSION_RATE, else 0.015%."""
    value = _setting("KRX_COMMISSION_RATE", DEFAULT_COMMISSION_RATE)
    try:
        rate = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise KRXRuleError(f"KRX_COMMISSION_RATE={value!r} is not a number.") from None
    if not rate.is_finite() or not Decimal(0) <= rate < Decimal("0.01"):
        raise KRXRuleError(
            f"KRX_COMMISSION_RATE={value!r} must be a fraction from 0 to 0.01 (0.00015 = 0.015%)."
        )
    return rate


def commission(amount: Decimal, *, rate: Decimal | None = None) -> Decimal:
    """Commission on a buy or a sell of `amount` KRW, truncated to the won (KIS truncates below
    one won on its statements; some brokers truncate to 10 won: pass your own if so)."""
    amount = _decimal(amount, "amount")
    if amount < 0:
        raise KRXRuleError(f"amount must not be negative, got {amount}.")
    rate = commission_rate() if rate is None else _decimal(rate, "rate")
    return (amount * rate).to_integral_value(rounding=ROUND_FLOOR).quantize(_WON)
