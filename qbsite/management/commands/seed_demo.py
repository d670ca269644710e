"""`manage.py seed_demo`: the role groups, a demo operator, a dozen real KRX symbols, the paper
account and three demo strategies (enabled, so `make run` shows signals, orders and fills).

Idempotent: a second run changes nothing and prints no secret. The operator's password and
API token are printed once, when they are created; after that, use
`manage.py changepassword operator` and the admin's token pages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

from marketdata.models import Market, Stock
from marketdata.services import stock_upsert
from qbsite.roles import CLIENT_GROUP, TRADER_GROUP
from trading.models import Strategy

OPERATOR_USERNAME = "operator"

# Real listings. market_cap and shares_outstanding are left empty rather than invented:
# they change daily and come from the feed / KIS master files.
DEMO_STOCKS = [
    ("005930", "Samsung Electronics", "Semiconductors", Market.KOSPI),
    ("000660", "SK hynix", "Semiconductors", Market.KOSPI),
    ("373220", "LG Energy Solution", "Secondary batteries", Market.KOSPI),
    ("207940", "Samsung Biologics", "Biotechnology", Market.KOSPI),
    ("005380", "Hyundai Motor", "Automobiles", Market.KOSPI),
    ("035420", "NAVER", "Internet services", Market.KOSPI),
    ("035720", "Kakao", "Internet services", Market.KOSPI),
    ("051910", "LG Chem", "Chemicals", Market.KOSPI),
    ("068270", "Celltrion", "Biotechnology", Market.KOSPI),
    ("105560", "KB Financial Group", "Banks", Market.KOSPI),
    ("247540", "Ecopro BM", "Battery materials", Market.KOSDAQ),
    ("086520", "Ecopro", "Battery materials", Market.KOSDAQ),
    ("196170", "Alteogen", "Biotechnology", Market.KOSDAQ),
    ("069500", "KODEX 200", "Index ETF (KOSPI 200)", Market.ETF),
]

# name, kind, symbols, allocation (KRW): 70 M of the paper account's 100 M, on 1-minute candles.
DEMO_STRATEGIES = [
    ("demo-mean5", "sample_mean5", ["005930", "000660", "035420"], Decimal("30000000")),
    ("demo-sma", "sma_crossover", ["005380", "068270", "105560"], Decimal("20000000")),
    ("demo-rsi", "rsi_reversion", ["247540", "086520"], Decimal("20000000")),
]


@dataclass
class SeedResult:
    groups_created: list[str]
    stocks_created: int
    strategies_created: list[str]
    operator_password: str | None  # set only when the operator was created just now
    operator_token: str | None  # set only when the token was created just now


@transaction.atomic
def seed_demo() -> SeedResult:
    groups_created = [
        name for name in (TRADER_GROUP, CLIENT_GROUP) if Group.objects.get_or_create(name=name)[1]
    ]
    stocks_created = 0
    for symbol, name, sector, market in DEMO_STOCKS:
        # Only missing symbols are created: an operator's later edits to a seeded one stay.
        if not Stock.objects.filter(symbol=symbol).exists():
            stock_upsert(symbol=symbol, name=name, sector=sector, market=market)
            stocks_created += 1

    # Created only when missing: an operator's later edits (or disabling one) stay.
    from trading.services import account_ensure
    from trading.strategies.services import strategy_create

    account_ensure(broker="paper")
    strategies_created = []
    for name, kind, symbols, allocation in DEMO_STRATEGIES:
        if not Strategy.objects.filter(name=name).exists():
            strategy_create(
                name=name,
                kind=kind,
                symbols=symbols,
                capital_allocation=allocation,
                interval="1m",
                enabled=True,
            )
            strategies_created.append(name)

    password = None
    operator = User.objects.filter(username=OPERATOR_USERNAME).first()
    if operator is None:
        password = secrets.token_urlsafe(12)
        # Superuser, so the admin shows every model without assigning permissions first.
        operator = User.objects.create_superuser(OPERATOR_USERNAME, "", password)
    token, token_created = Token.objects.get_or_create(user=operator)
    return SeedResult(
        groups_created,
        stocks_created,
        strategies_created,
        password,
        token.key if token_created else None,
    )


class Command(BaseCommand):
    help = "Create the role groups, a demo operator account and the demo KRX symbols (idempotent)."

    def handle(self, *args, **options):
        result = seed_demo()
        if result.groups_created:
            self.stdout.write(f"Created groups: {', '.join(result.groups_created)}.")
        self.stdout.write(
            f"Demo symbols: {result.stocks_created} created, "
            f"{len(DEMO_STOCKS) - result.stocks_created} already there."
        )
        if result.strategies_created:
            self.stdout.write(
                f"Demo strategies created (enabled, paper broker): "
                f"{', '.join(result.strategies_created)}."
            )
        if result.operator_password:
            self.stdout.write(
                self.style.WARNING(
                    f"Demo operator created. Username: {OPERATOR_USERNAME}  "
                    f"Password: {result.operator_password}\n"
                    "This password is shown once; "
                    f'`make manage ARGS="changepassword {OPERATOR_USERNAME}"` sets a new one.'
                )
            )
        if result.operator_token:
            self.stdout.write(
                self.style.WARNING(
                    f"API token for {OPERATOR_USERNAME} (shown once): {result.operator_token}\n"
                    "Send it as the header `Authorization: Token <token>`."
                )
            )
