import asyncio

import redis.asyncio
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from kis.client import KST, KISClient
from kis.config import KISConfig, app_key_id
from kis.errors import KISError
from qbsite.exceptions import QBError


class Command(BaseCommand):
    help = (
        "Check the KIS credentials, read-only: get the access token (the cached one, or a new"
        " one), then one current price. Prints the environment, host, token expiry and price;"
        " exits non-zero with KIS's message on failure. Never prints a secret."
    )

    def add_arguments(self, parser):
        parser.add_argument("--symbol", default="005930", help="Symbol to quote (005930).")

    def handle(self, *args, symbol, **options):
        try:
            config = KISConfig.from_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"KIS environment: {config.env}")
        self.stdout.write(f"REST host: {config.rest_url}")
        self.stdout.write(f"App key id: {app_key_id(config.app_key)} (a hash, not the key)")
        try:
            asyncio.run(self._check(config, symbol))
        except KISError as exc:
            raise CommandError(f"KIS check failed: {exc.message}") from None
        except QBError as exc:
            raise CommandError(exc.message) from None

    async def _check(self, config: KISConfig, symbol: str) -> None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            async with KISClient(config, redis=client) as kis:
                cached = await kis.tokens.cached_token()
                token = await kis.tokens.access_token()
                origin = "cached" if cached is not None and cached.value == token.value else "new"
                self.stdout.write(
                    f"Access token: {origin}, expires"
                    f" {token.expires_at.astimezone(KST):%Y-%m-%d %H:%M:%S} KST"
                )
                quote = await kis.current_price(symbol)
                self.stdout.write(
                    f"{symbol}: {quote.price:,} KRW ({quote.change:+,}, {quote.change_rate}%),"
                    f" volume {quote.volume:,}"
                )
        finally:
            await client.aclose()
        self.stdout.write(self.style.SUCCESS("KIS check passed."))
