from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from qbsite.exceptions import QBError
from qbsite.fields import symbol_validator
from trading import broker_sync, reconcile


class Command(BaseCommand):
    help = (
        "Check that every position equals the replay of its trades (quantity, average price,"
        " cost basis, realized and unrealized PnL, each sell's profit_loss) and that each"
        " account's cash equals its initial cash plus what its trades moved. Prints every"
        " difference (kind, symbol or broker, field, stored, expected) and exits 1 when there"
        " is any. --fix rewrites the differing positions and cash from the trades (never the"
        " trades), under the same locks as fills, then checks again. --broker also compares with"
        " the broker's own positions and cash; with KIS (--broker kis, or TRADING_BROKER=kis)"
        " it runs the full reconciliation the orders engine runs at start: missing fills"
        " applied, unknown KIS orders recorded as external, open orders and positions compared,"
        " the result stored (a disagreement stops new KIS orders until one agrees or an"
        " operator overrides in the admin)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--symbol", action="append", dest="symbols", help="Only this symbol (repeatable)."
        )
        parser.add_argument(
            "--broker",
            nargs="?",
            const="",
            default=None,
            metavar="NAME",
            help="Also compare with what the broker (NAME, default TRADING_BROKER) reports.",
        )
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Rewrite the differing positions and account cash from the trades.",
        )

    def handle(self, *args, symbols=None, fix=False, broker=None, **options):
        for symbol in symbols or ():
            try:
                symbol_validator(symbol)
            except ValidationError:
                raise CommandError(
                    f"--symbol {symbol!r} is not a KRX symbol (e.g. 005930)."
                ) from None
        found = reconcile.differences(symbols)
        for difference in found:
            self.stdout.write(str(difference))
        if fix and found:
            changes = reconcile.fix(found)
            for change in changes:
                self.stdout.write(f"fixed: {change}")
            found = reconcile.differences(symbols)
            for difference in found:
                self.stdout.write(f"still: {difference}")
        if broker is not None:
            name = broker or getattr(settings, "TRADING_BROKER", "paper")
            if name in broker_sync.RECONCILED_BROKERS:
                found = found + self.reconcile_with(name)
            else:
                try:
                    theirs = reconcile.against_broker(name)
                except QBError as exc:
                    raise CommandError(f"The broker could not be asked: {exc.message}") from None
                for difference in theirs:
                    self.stdout.write(str(difference))
                found = found + theirs
        if found:
            raise CommandError(
                f"{len(found)} difference(s) between the ledger and the stored rows."
            )
        self.stdout.write("Positions and cash equal their trades.")

    def reconcile_with(self, name: str) -> list[str]:
        report = broker_sync.broker_reconcile(name=name)
        for line in report.lines():
            self.stdout.write(line)
        if report.unreachable:
            raise CommandError(report.unreachable)
        self.stdout.write(f"{name}: {report.status}")
        return report.disagreements
