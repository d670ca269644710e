"""Review findings on KISClient, shown against the fake KIS server."""

import logging

import pytest

from kis.client import KISClient
from kis.errors import KISError


@pytest.fixture
async def kis(kis_config, aredis):
    async with KISClient(kis_config, redis=aredis, backoff_base=0.01) as client:
        yield client


async def test_paging_context_never_puts_the_account_number_in_logs(fake_kis, kis, caplog):
    # KIS's ctx_area_fk100 starts with the account number; it goes back as CTX_AREA_FK100 in
    # the next page's query string, which httpx logs at INFO and the client at DEBUG.
    caplog.set_level(logging.DEBUG)
    for n in range(3):
        fake_kis.state.set_position(f"00{n}930", 10, 70000)
    fake_kis.state.balance_page_size = 1
    balance = await kis.balance()
    assert len(balance.positions) == 3
    pages = [r for r in fake_kis.state.requests if r["path"].endswith("inquire-balance")]
    assert pages[1]["params"]["CTX_AREA_FK100"].startswith(kis.config.cano)  # sent as KIS wants
    assert "inquire-balance" in caplog.text
    assert kis.config.cano not in caplog.text


async def test_paging_stops_when_kis_says_more_but_the_context_does_not_move(fake_kis, kis):
    # Asking again with the same context gets the same page: without a check the client asked
    # 1,000 times (a minute of the account's request budget) before giving up.
    for n in range(3):
        fake_kis.state.set_position(f"00{n}930", 10, 70000)
    fake_kis.state.balance_page_size = 2
    fake_kis.state.more_on_last_page = True
    with pytest.raises(KISError, match="same paging context"):
        await kis.balance()
    pages = [r for r in fake_kis.state.requests if r["path"].endswith("inquire-balance")]
    assert len(pages) == 2  # the second answer points back at itself: not asked again
