"""Risk metrics: read-only for every role, newest first, cursor paginated."""

import pytest

from qbsite.tests.api_factories import T0, make_risk_metric, minutes, walk

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics(db):
    # Two snapshots share a timestamp (a breach snapshot beside the scheduled one).
    stamps = [T0, T0 + minutes(5), T0 + minutes(5), T0 + minutes(10)]
    return [make_risk_metric(stamp) for stamp in stamps]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3, 2, 1, 0]),
        ({"timestamp_after": "2024-05-02T00:05:00Z"}, [3, 2, 1]),
        ({"timestamp_before": "2024-05-02T09:05:00+09:00"}, [0]),
    ],
)
def test_risk_metric_filters(params, expected, metrics, client_user, api_client_for):
    response = api_client_for(client_user).get("/api/v1/risk-metrics/", params)
    assert response.status_code == 200, response.data
    assert [row["id"] for row in response.data["results"]] == [metrics[i].pk for i in expected]


def test_risk_metric_cursor_walks_ties_once(metrics, client_user, api_client_for):
    rows = walk(api_client_for(client_user), "/api/v1/risk-metrics/?page_size=1")
    assert [row["id"] for row in rows] == [m.pk for m in reversed(metrics)]
    assert rows[0]["portfolio_value"] == "100000000.0000"
