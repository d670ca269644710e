"""The orders, transitions and accounts admin: read-only history, the cancel action through
the OMS, accounts created once with their initial cash, positions' computed fields."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.urls import reverse

from qbsite.admin_utils import BigTableAdminMixin, EstimatedCountPaginator
from qbsite.tests.api_factories import make_position, make_stock
from trading import services
from trading.models import Account, Order, OrderStatus, OrderTransition, Position

pytestmark = pytest.mark.django_db
D = Decimal
T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _order(cid, *, order_type="LIMIT", price="69000", status=OrderStatus.ACCEPTED):
    order, _ = services.order_create(
        client_order_id=cid, symbol="005930", side="BUY", order_type=order_type, quantity=10,
        limit_price=D(price) if order_type == "LIMIT" else None, actor="test", at=T,
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    if status != OrderStatus.SUBMITTED:
        services.order_set_status(order_id=order.pk, to_status=OrderStatus.ACCEPTED, actor="t")
    return order


@pytest.fixture
def orders(db):
    make_stock("005930", market="KOSPI")
    services.account_ensure(broker="paper", initial_cash=D("10000000"))
    resting = _order("rest-1")
    filled = _order("fill-1", order_type="MARKET")
    services.order_apply_fill(
        order_id=filled.pk, execution_id="E-1", quantity=10, price=D("70000"), at=T
    )
    return {"resting": resting, "filled": filled}


@pytest.fixture
def browser(client, operator):
    client.force_login(operator)
    return client


def url(model, view, *args):
    return reverse(f"admin:trading_{model._meta.model_name}_{view}", args=args)


def test_big_table_conventions():
    for model in (Order, OrderTransition):
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, BigTableAdminMixin)
        assert model_admin.paginator is EstimatedCountPaginator
        assert model_admin.show_full_result_count is False
        assert model_admin.show_facets is admin.ShowFacets.NEVER
        assert model_admin.date_hierarchy is None
    assert admin.site._registry[Order].list_select_related == ("symbol", "strategy", "user")


def test_the_change_page_is_the_read_only_history(orders, browser):
    filled = orders["filled"]
    response = browser.get(url(Order, "change", filled.pk))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("fill-1", "E-1", "70000", "105", "ACCEPTED", "FILLED", "broker"):
        assert text in html, text
    formsets = response.context["inline_admin_formsets"]
    assert [f.opts.verbose_name for f in formsets] == ["transition", "fill"]
    assert [len(f.formset.forms) for f in formsets] == [4, 1]  # NEW SUBMITTED ACCEPTED FILLED
    for formset in formsets:
        assert not formset.has_add_permission and not formset.has_change_permission
        assert not formset.has_delete_permission
    assert 'name="_save"' not in html
    # Nothing to post: the order cannot be changed, added or deleted here.
    assert browser.post(url(Order, "change", filled.pk), {}).status_code == 403
    assert browser.get(url(Order, "add")).status_code == 403
    assert browser.get(url(Order, "delete", filled.pk)).status_code == 403


def test_the_cancel_action_goes_through_the_oms(orders, browser):
    changelist = browser.get(url(Order, "changelist"))
    assert list(changelist.context["action_form"].fields["action"].choices)[1:] == [
        ("cancel_orders", "Cancel the selected orders")
    ]
    response = browser.post(
        url(Order, "changelist"),
        {
            "action": "cancel_orders",
            "_selected_action": [orders["resting"].pk, orders["filled"].pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 order(s) now canceled: rest-1." in texts
    [refusal] = [t for t in texts if "fill-1" in t]
    assert "is FILLED" in refusal
    resting = Order.objects.get(pk=orders["resting"].pk)
    assert resting.status == OrderStatus.CANCELED
    last = resting.transitions.order_by("-id")[:2]
    assert [(t.from_status, t.to_status) for t in reversed(last)] == [
        ("ACCEPTED", "CANCEL_PENDING"), ("CANCEL_PENDING", "CANCELED"),
    ]  # fmt: skip
    assert last[1].actor == "admin:olivia-operator"
    assert last[1].reason == "Canceled by an operator in the admin."
    assert Order.objects.get(pk=orders["filled"].pk).status == OrderStatus.FILLED


def test_others_cannot_run_the_action(orders, client, trader):
    client.force_login(trader)
    response = client.post(
        url(Order, "changelist"),
        {"action": "cancel_orders", "_selected_action": [orders["resting"].pk]},
    )
    assert response.status_code == 302 and "login" in response.url
    assert Order.objects.get(pk=orders["resting"].pk).status == OrderStatus.ACCEPTED


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "rest-1"}, ["rest-1"]),
        ({"q": "0059"}, ["fill-1", "rest-1"]),
        ({"status__exact": "FILLED"}, ["fill-1"]),
        ({"created_at__recent": "1h"}, []),  # created at T, long before the last hour
    ],
)
def test_changelist_search_and_filters(orders, browser, query, expected):
    response = browser.get(url(Order, "changelist"), query)
    assert response.status_code == 200
    found = sorted(o.client_order_id for o in response.context["cl"].result_list)
    assert found == expected


def test_an_account_is_created_with_its_initial_cash_and_never_edited(db, browser):
    assert browser.get(url(Account, "add")).status_code == 200
    response = browser.post(url(Account, "add"), {"broker": "paper", "initial_cash": "5000000"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    account = Account.objects.get()
    assert (account.broker, account.cash, account.initial_cash) == ("paper", 5000000, 5000000)

    again = browser.post(url(Account, "add"), {"broker": "paper", "initial_cash": "1"})
    assert "already exists" in again.content.decode()
    negative = browser.post(url(Account, "add"), {"broker": "paper", "initial_cash": "-1"})
    assert negative.status_code == 200
    assert "initial_cash" in negative.context["adminform"].form.errors
    unknown = browser.post(url(Account, "add"), {"broker": "nowhere", "initial_cash": "1"})
    assert "broker" in unknown.context["adminform"].form.errors

    change = browser.get(url(Account, "change", account.pk))
    assert change.status_code == 200
    assert 'name="initial_cash"' not in change.content.decode()
    assert browser.post(url(Account, "change", account.pk), {"cash": "1"}).status_code == 403
    assert browser.post(url(Account, "delete", account.pk), {"post": "yes"}).status_code == 403
    assert Account.objects.get().cash == 5000000


def test_position_cost_basis_and_pnl_are_read_only(db, browser):
    position = make_position(make_stock())
    response = browser.get(url(Position, "change", position.pk))
    form = response.context["adminform"].form
    assert {"cost_basis", "unrealized_pnl", "realized_pnl"}.isdisjoint(form.fields)
    assert {"quantity", "average_price"} <= set(form.fields)
    assert Position.objects.count() == 1
