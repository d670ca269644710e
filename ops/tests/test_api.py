"""System logs: operators only, filtered by level, component prefix and time."""

import pytest

from qbsite.tests.api_factories import T0, make_log, minutes, walk

pytestmark = pytest.mark.django_db


@pytest.fixture
def logs(db):
    return [
        make_log(T0, "WARNING", "qb.collector", "feed slow"),
        make_log(T0 + minutes(1), "ERROR", "qb.collector.kis", "socket closed"),
        make_log(T0 + minutes(2), "ERROR", "qb.orders", "rejected"),
        make_log(T0 + minutes(3), "CRITICAL", "qb.risk", "halted"),
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3, 2, 1, 0]),
        ({"level": "ERROR"}, [2, 1]),
        ({"component": "qb.collector"}, [1, 0]),  # a prefix: the kis child logger too
        ({"component": "collector"}, []),
        ({"timestamp_after": "2024-05-02T00:02:00Z"}, [3, 2]),
        ({"level": "ERROR", "timestamp_before": "2024-05-02T00:02:00Z"}, [1]),
    ],
)
def test_system_log_filters(params, expected, logs, operator, api_client_for):
    response = api_client_for(operator).get("/api/v1/system-logs/", params)
    assert response.status_code == 200, response.data
    assert [row["id"] for row in response.data["results"]] == [logs[i].pk for i in expected]


def test_system_log_cursor(logs, operator, api_client_for):
    rows = walk(api_client_for(operator), "/api/v1/system-logs/?page_size=3")
    assert [row["message"] for row in rows] == ["halted", "rejected", "socket closed", "feed slow"]


def test_system_log_list_queries_are_pinned(
    logs, operator, django_assert_num_queries, api_client_for
):
    api = api_client_for(operator)
    # token + user (staff: no group lookup), the page. No COUNT.
    with django_assert_num_queries(2):
        assert api.get("/api/v1/system-logs/").status_code == 200
