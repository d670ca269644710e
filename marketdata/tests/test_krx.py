"""KRX rules: tick sizes, price limits, sessions, trading days, taxes and commission."""

import datetime as dt
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.krx import KRXRuleError, Session
from qbsite.exceptions import QBError

D = Decimal
SEOUL = krx.SEOUL
UTC = dt.UTC


def seoul(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SEOUL)


# --- Tick sizes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("below", "at", "tick_below", "tick_at"),
    [
        (1999, 2000, 1, 5),
        (4995, 5000, 5, 10),
        (19990, 20000, 10, 50),
        (49950, 50000, 50, 100),
        (199900, 200000, 100, 500),
        (499500, 500000, 500, 1000),
    ],
)
def test_tick_size_at_every_band_boundary(below, at, tick_below, tick_at):
    assert krx.tick_size(D(below)) == tick_below
    assert krx.tick_size(D(at)) == tick_at
    # The last price of the band below is on its grid; one tick of the new band above is too.
    assert krx.is_on_tick(D(below))
    assert krx.is_on_tick(D(at))
    assert krx.is_on_tick(D(at + tick_at))
    assert not krx.is_on_tick(D(at + tick_below)) or tick_below == tick_at


def test_tick_size_ends_of_the_table():
    assert krx.tick_size(D(1)) == 1
    assert krx.tick_size(D(3_000_000)) == 1000
    assert krx.tick_size(D("1999.5")) == 1  # a computed price below the 2,000 boundary


@pytest.mark.parametrize("price", ["2001", "5005", "20010", "50050", "200100", "500500", "0", "-5"])
def test_off_tick_and_non_positive_prices_are_refused(price):
    assert not krx.is_on_tick(D(price))


def test_fractional_price_is_not_on_tick():
    assert not krx.is_on_tick(D("71500.5"))


@pytest.mark.parametrize("instrument", ["etf", "etn", "elw"])
def test_funds_tick_is_five_won_at_every_price(instrument):
    for price in ("1500", "9995", "45005", "250005", "1000005"):
        assert krx.tick_size(D(price), instrument=instrument) == 5
    assert krx.is_on_tick(D(45005), instrument=instrument)
    assert not krx.is_on_tick(D(45005))  # a stock at 45,005 is off its 50-won grid
    assert not krx.is_on_tick(D(1502), instrument=instrument)


@pytest.mark.parametrize(
    ("price", "down", "up", "nearest"),
    [
        ("71549", "71500", "71600", "71500"),
        ("71550", "71500", "71600", "71600"),  # a tie goes up
        ("1999.5", "1999", "2000", "2000"),
        ("4997", "4995", "5000", "4995"),
        ("49990", "49950", "50000", "50000"),
        ("500000", "500000", "500000", "500000"),
    ],
)
def test_round_to_tick(price, down, up, nearest):
    assert krx.round_to_tick(D(price), "down") == D(down)
    assert krx.round_to_tick(D(price), "up") == D(up)
    assert krx.round_to_tick(D(price), "nearest") == D(nearest)


def test_round_to_tick_etf():
    assert krx.round_to_tick(D(10_003), "down", instrument="etf") == 10_000
    assert krx.round_to_tick(D(10_003), "up", instrument="etf") == 10_005


def test_bad_tick_inputs_are_errors_naming_the_problem():
    with pytest.raises(KRXRuleError, match="float"):
        krx.tick_size(71500.0)
    with pytest.raises(KRXRuleError, match="greater than 0"):
        krx.tick_size(D(0))
    with pytest.raises(KRXRuleError, match="instrument='bond'"):
        krx.tick_size(D(100), instrument="bond")
    with pytest.raises(KRXRuleError, match="direction='sideways'"):
        krx.round_to_tick(D(100), "sideways")
    with pytest.raises(KRXRuleError, match="lowest is 1"):
        krx.round_to_tick(D("0.5"), "down")
    assert issubclass(KRXRuleError, QBError)


# --- Price limits --------------------------------------------------------------------------
def test_price_limits_prev_close_71500():
    # By hand: 71,500 x 0.30 = 21,450; the base's tick is 100, so the width is cut to 21,400.
    # Upper 71,500 + 21,400 = 92,900 (on the 100 grid). Lower 71,500 - 21,400 = 50,100.
    # (Without the cut: 92,950 rounds down to 92,900 and 50,050 rounds up to 50,100: the same.)
    limits = krx.price_limits(D(71_500))
    assert limits == krx.PriceLimits(lower=D(50_100), upper=D(92_900))
    assert krx.within_band(D(92_900), D(71_500))
    assert not krx.within_band(D(93_000), D(71_500))
    assert krx.within_band(D(50_100), D(71_500))
    assert not krx.within_band(D(50_000), D(71_500))


def test_price_limits_land_on_the_grid_of_another_band():
    # 10,000 x 0.3 = 3,000 -> 13,000 and 7,000: already on the 10-won grid.
    assert krx.price_limits(D(10_000)) == krx.PriceLimits(D(7_000), D(13_000))
    # 40,000 x 0.3 = 12,000: the upper limit 52,000 sits in the 100-won band, still on grid.
    assert krx.price_limits(D(40_000)) == krx.PriceLimits(D(28_000), D(52_000))
    # 45,050 x 0.3 = 13,515 -> cut to the base tick 50: 13,500. Upper 58,550 is in the
    # 100-won band -> rounded down to 58,500. Lower 31,550 is on the 50 grid.
    assert krx.price_limits(D(45_050)) == krx.PriceLimits(D(31_550), D(58_500))
    # 60,200 x 0.3 = 18,060 -> cut to 18,000: lower 42,200 (the plain rounding of
    # 42,140 up to the 50 grid would give 42,150; see price_limits' docstring).
    assert krx.price_limits(D(60_200)) == krx.PriceLimits(D(42_200), D(78_200))


def test_price_limits_konex_and_etf():
    assert krx.price_limits(D(10_000), market="KONEX") == krx.PriceLimits(D(8_500), D(11_500))
    # ETF: 5-won grid. 10,010 x 0.3 = 3,003 -> 3,000; 13,010 and 7,010 are on the 5 grid.
    assert krx.price_limits(D(10_010), instrument="etf") == krx.PriceLimits(D(7_010), D(13_010))


def test_price_limits_refuse_bad_prev_close():
    with pytest.raises(KRXRuleError, match="prev_close"):
        krx.price_limits(D(0))
    with pytest.raises(KRXRuleError, match="float"):
        krx.within_band(D(100), 100.0)


# --- Trading days --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("day", "trades"),
    [
        (dt.date(2026, 1, 1), False),  # New Year's Day
        (dt.date(2026, 1, 2), True),
        (dt.date(2025, 10, 6), False),  # Chuseok
        (dt.date(2025, 10, 7), False),
        (dt.date(2025, 10, 10), True),
        (dt.date(2025, 5, 1), False),  # Labour Day: KRX closed
        (dt.date(2025, 12, 31), False),  # year-end closing day
        (dt.date(2025, 6, 3), False),  # presidential election
        (dt.date(2026, 6, 3), False),  # local elections (added by QB, missing in the package)
        (dt.date(2026, 1, 3), False),  # Saturday
        (dt.date(2026, 1, 4), False),  # Sunday
        (dt.date(2026, 1, 5), True),  # Monday
    ],
)
def test_is_trading_day(day, trades):
    assert krx.is_trading_day(day) is trades


def test_calendar_range_is_a_clear_error():
    with pytest.raises(KRXRuleError, match=r"outside the KRX calendar .*KRX_CALENDAR_END"):
        krx.is_trading_day(dt.date(2031, 1, 2))
    with pytest.raises(KRXRuleError, match="outside the KRX calendar"):
        krx.is_trading_day(dt.date(2009, 12, 31))
    with pytest.raises(KRXRuleError, match=r"datetime\.date"):
        krx.is_trading_day(seoul(2026, 1, 5, 9))


# --- Sessions ------------------------------------------------------------------------------
PRE = Session.PRE_MARKET_CLOSING_PRICE
OPEN_AUCTION = Session.OPENING_AUCTION


@pytest.mark.parametrize(
    ("hm", "expected"),
    [
        ((8, 29, 59), Session.CLOSED),
        ((8, 30, 0), PRE | OPEN_AUCTION),
        ((8, 39, 59), PRE | OPEN_AUCTION),
        ((8, 40, 0), OPEN_AUCTION),
        ((8, 59, 59), OPEN_AUCTION),
        ((9, 0, 0), Session.CONTINUOUS),
        ((15, 19, 59), Session.CONTINUOUS),
        ((15, 20, 0), Session.CLOSING_AUCTION),
        ((15, 29, 59), Session.CLOSING_AUCTION),
        ((15, 30, 0), Session.CLOSED),
        ((15, 39, 59), Session.CLOSED),
        ((15, 40, 0), Session.POST_MARKET_CLOSING_PRICE),
        ((15, 59, 59), Session.POST_MARKET_CLOSING_PRICE),
        ((16, 0, 0), Session.AFTER_HOURS_SINGLE_PRICE),
        ((17, 59, 59), Session.AFTER_HOURS_SINGLE_PRICE),
        ((18, 0, 0), Session.CLOSED),
    ],
)
def test_session_at_boundaries_of_an_ordinary_day(hm, expected):
    moment = seoul(2026, 1, 5, *hm)
    assert krx.session_at(moment) == expected
    assert krx.is_open(moment) is bool(expected & Session.REGULAR)


def test_session_at_accepts_utc_and_rejects_naive():
    # 00:00 UTC is 09:00 in Seoul (no daylight saving in Korea).
    assert krx.session_at(dt.datetime(2026, 1, 5, 0, 0, tzinfo=UTC)) == Session.CONTINUOUS
    assert Session.CONTINUOUS in krx.session_at(dt.datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    with pytest.raises(KRXRuleError, match="no time zone"):
        krx.session_at(dt.datetime(2026, 1, 5, 9, 0))
    with pytest.raises(KRXRuleError, match="no time zone"):
        krx.is_open(dt.datetime(2026, 1, 5, 9, 0))


def test_holidays_and_weekends_are_closed_all_day():
    for moment in (seoul(2026, 1, 1, 10), seoul(2025, 10, 6, 10), seoul(2026, 1, 3, 10)):
        assert krx.session_at(moment) == Session.CLOSED
        assert not krx.is_open(moment)


def test_first_trading_day_of_the_year_opens_at_ten():
    # 2026-01-02: the opening ceremony moves the morning an hour later; the close is as usual.
    assert krx.session_open(dt.date(2026, 1, 2)) == seoul(2026, 1, 2, 10)
    assert krx.session_close(dt.date(2026, 1, 2)) == seoul(2026, 1, 2, 15, 30)
    assert krx.session_at(seoul(2026, 1, 2, 9, 0)) == Session.CLOSED
    assert krx.session_at(seoul(2026, 1, 2, 9, 35)) == PRE | OPEN_AUCTION
    assert krx.session_at(seoul(2026, 1, 2, 10, 0)) == Session.CONTINUOUS
    assert krx.session_at(seoul(2026, 1, 2, 15, 45)) == Session.POST_MARKET_CLOSING_PRICE


def test_exam_day_moves_everything_an_hour_later():
    # 2025-11-13, the college entrance exam: 10:00-16:30, post-market 16:40-17:00,
    # single-price 17:00-18:00.
    assert krx.session_open(dt.date(2025, 11, 13)) == seoul(2025, 11, 13, 10)
    assert krx.session_close(dt.date(2025, 11, 13)) == seoul(2025, 11, 13, 16, 30)
    assert krx.session_at(seoul(2025, 11, 13, 16, 25)) == Session.CLOSING_AUCTION
    assert krx.session_at(seoul(2025, 11, 13, 16, 45)) == Session.POST_MARKET_CLOSING_PRICE
    assert krx.session_at(seoul(2025, 11, 13, 17, 0)) == Session.AFTER_HOURS_SINGLE_PRICE
    assert krx.session_at(seoul(2025, 11, 13, 18, 0)) == Session.CLOSED


def test_session_close_of_a_holiday_is_an_error():
    with pytest.raises(KRXRuleError, match="does not trade on 2025-10-06"):
        krx.session_close(dt.date(2025, 10, 6))


def test_session_details_before_2016_are_refused_but_is_open_works():
    with pytest.raises(KRXRuleError, match="not modelled"):
        krx.session_at(seoul(2015, 3, 3, 10))
    assert krx.is_open(seoul(2015, 3, 3, 14, 59))
    assert not krx.is_open(seoul(2015, 3, 3, 15, 0))  # the close was 15:00 then


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (seoul(2026, 1, 5, 8, 0), seoul(2026, 1, 5, 9)),  # before today's open
        (seoul(2026, 1, 5, 9, 0), seoul(2026, 1, 6, 9)),  # strictly after: tomorrow
        (seoul(2026, 1, 9, 16, 0), seoul(2026, 1, 12, 9)),  # Friday evening -> Monday
        (seoul(2025, 12, 30, 16, 0), seoul(2026, 1, 2, 10)),  # over the year end, late open
        (seoul(2025, 10, 2, 20, 0), seoul(2025, 10, 10, 9)),  # over Chuseok 2025
    ],
)
def test_next_open(moment, expected):
    assert krx.next_open(moment) == expected


# --- Costs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("market", "trade_date", "rate"),
    [
        ("KOSPI", dt.date(2026, 3, 3), "0.0020"),  # 0.05% + 0.15% rural
        ("KOSDAQ", dt.date(2026, 3, 3), "0.0020"),
        ("KONEX", dt.date(2026, 3, 3), "0.0010"),
        ("KOSPI", dt.date(2025, 6, 2), "0.0015"),  # 0% + 0.15% rural
        ("KOSDAQ", dt.date(2025, 6, 2), "0.0015"),
        ("KOSPI", dt.date(2024, 6, 3), "0.0018"),
        ("KOSPI", dt.date(2022, 6, 2), "0.0023"),
        ("KOSPI", dt.date(2019, 5, 29), "0.0030"),  # settles 2019-05-31, before the cut
        ("KOSPI", dt.date(2019, 5, 30), "0.0025"),  # settles 2019-06-03, the cut's first day
        ("ETF", dt.date(2026, 3, 3), "0"),
    ],
)
def test_sell_tax_rate_by_date(market, trade_date, rate):
    assert krx.sell_tax_rate(market, trade_date) == D(rate)


def test_sell_tax_follows_the_settlement_day_over_the_year_end():
    # Fri 2025-12-26 settles Tue 12-30 (2025 rate); Mon 12-29 settles 2026-01-02 (2026 rate):
    # 12-31 and 01-01 are closed.
    assert krx.settlement_date(dt.date(2025, 12, 26)) == dt.date(2025, 12, 30)
    assert krx.settlement_date(dt.date(2025, 12, 29)) == dt.date(2026, 1, 2)
    assert krx.sell_tax_rate("KOSPI", dt.date(2025, 12, 26)) == D("0.0015")
    assert krx.sell_tax_rate("KOSPI", dt.date(2025, 12, 29)) == D("0.0020")


def test_sell_tax_amount_truncates_each_tax_to_the_won():
    # 1,234,567 x 0.05% = 617.2835 -> 617; x 0.15% = 1,851.8505 -> 1,851. Total 2,468
    # (truncating the 0.20% total, 2,469.134, would give 2,469).
    tax = krx.sell_tax(D(1_234_567), market="KOSPI", trade_date=dt.date(2026, 3, 3))
    assert tax == D(2_468)
    assert tax.as_tuple().exponent == 0
    # KOSDAQ: one tax. 1,234,567 x 0.20% = 2,469.134 -> 2,469.
    assert krx.sell_tax(D(1_234_567), market="KOSDAQ", trade_date=dt.date(2026, 3, 3)) == 2_469


def test_sell_tax_errors_name_the_problem():
    with pytest.raises(KRXRuleError, match="market 'NYSE'"):
        krx.sell_tax_rate("NYSE", dt.date(2026, 3, 3))
    with pytest.raises(KRXRuleError, match="market 'KONEX'"):
        krx.sell_tax_rate("KONEX", dt.date(2012, 3, 5))  # before KONEX opened
    with pytest.raises(KRXRuleError, match="does not trade on 2026-03-01"):
        krx.sell_tax_rate("KOSPI", dt.date(2026, 3, 1))
    with pytest.raises(KRXRuleError, match="negative"):
        krx.sell_tax(D(-1), market="KOSPI", trade_date=dt.date(2026, 3, 3))


def test_commission_default_and_truncation():
    # 1,234,567 x 0.015% = 185.185 -> 185 won.
    assert krx.commission_rate() == D("0.00015")
    assert krx.commission(D(1_234_567)) == D(185)
    assert krx.commission(D(1_234_567), rate=D("0.000140527")) == D(173)  # 173.49...
    assert krx.commission(D(0)) == 0


def test_commission_rate_from_settings(settings):
    settings.KRX_COMMISSION_RATE = "0.0001"
    assert krx.commission(D(1_234_567)) == D(123)  # 123.4567 -> 123
    settings.KRX_COMMISSION_RATE = "5%"
    with pytest.raises(KRXRuleError, match="KRX_COMMISSION_RATE='5%'"):
        krx.commission(D(100))
    settings.KRX_COMMISSION_RATE = D("0.02")
    with pytest.raises(KRXRuleError, match=r"from 0 to 0\.01"):
        krx.commission(D(100))
