"""The trading core's tests run with the risk limits opened wide (risk.testing.PERMISSIVE):
they test orders, fills and positions, not the risk rules. Those have their own tests (risk/
tests, and the cases in test_oms.py that put the defaults back with risk.testing)."""

import pytest


@pytest.fixture(autouse=True)
def _permissive_risk_limits(request):
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transactional = marker.kwargs.get("transaction", False)
        request.getfixturevalue("transactional_db" if transactional else "db")
    elif "transactional_db" in request.fixturenames:
        request.getfixturevalue("transactional_db")
    elif "db" in request.fixturenames:
        request.getfixturevalue("db")
    else:
        return  # no database: nothing to open
    from risk.testing import limits_permissive

    limits_permissive()
