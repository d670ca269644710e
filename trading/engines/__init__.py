"""The trading engines (DESIGN.md, "Engines"): name -> dotted path, imported lazily."""

ENGINES = {
    "strategy": "trading.engines.strategy",
    "orders": "trading.engines.orders",
    "portfolio": "trading.engines.portfolio",
}
