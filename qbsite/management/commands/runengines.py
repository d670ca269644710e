"""`manage.py runengines [name ...]`: run engines in this process until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from qbsite.engines import EngineError, Runtime, load_engine_class, registry


class Command(BaseCommand):
    help = (
        "Run QB's engines (all registered ones by default, or those named) on the Redis channel "
        "layer, with heartbeats, until SIGINT / SIGTERM. A name may also be the dotted path of "
        "an Engine class."
    )

    def add_arguments(self, parser):
        parser.add_argument("engines", nargs="*", metavar="name", help="Engines to run.")
        parser.add_argument("--list", action="store_true", help="List the registered engines.")
        parser.add_argument(
            "--heartbeat-seconds",
            type=float,
            default=None,
            help="Heartbeat period (default: settings.HEARTBEAT_SECONDS, 5).",
        )

    def handle(self, *args, **options):
        try:
            known = registry()
        except EngineError as exc:
            raise CommandError(str(exc)) from None
        if options["list"]:
            for name, path in known.items():
                try:
                    load_engine_class(name, known=known)
                    state = "ok"
                except EngineError as exc:
                    state = f"unavailable: {exc}"
                self.stdout.write(f"{name:<12} {path}  [{state}]")
            return
        heartbeat = options["heartbeat_seconds"]
        if heartbeat is not None and heartbeat <= 0:
            raise CommandError("--heartbeat-seconds must be greater than 0.")
        names = list(dict.fromkeys(options["engines"] or known))
        if not names:
            raise CommandError("No engines are registered.")
        try:
            engines = [load_engine_class(name, known=known)() for name in names]
            runtime = Runtime(engines, heartbeat_seconds=heartbeat)
        except EngineError as exc:
            raise CommandError(str(exc)) from None
        asyncio.run(runtime.run())
