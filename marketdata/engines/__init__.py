"""The market-data engines (DESIGN.md, "Engines"): name -> dotted path, imported lazily.

Every app with engines has an `engines` package (or module) exposing ENGINES like this one;
the runtime (qbsite/engines.py) gathers them from all installed apps, so `trading`, `risk`
and `ops` add theirs without touching this file. A path names either the Engine subclass or
the module holding it (the runtime then takes the module's Engine subclass of that name).

Nothing is imported here: `runengines --list`, or running one engine, must not pay for (or
break on) the others' imports.
"""

ENGINES = {
    "collector": "marketdata.engines.collector",
    "indicators": "marketdata.engines.indicators",
    "archiver": "marketdata.engines.archiver",
}
