import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CANDLE_INTERVALS": ["1m", "2m"]}, "CANDLE_INTERVALS"),
        ({"CANDLE_INTERVALS": ["5m"], "INDICATOR_INTERVAL": "1m"}, "INDICATOR_INTERVAL='1m'"),
        ({"COLLECTOR_FEED": "carrier-pigeon"}, "COLLECTOR_FEED='carrier-pigeon'"),
        ({"COLLECTOR_FEED": "csv:"}, "COLLECTOR_FEED='csv:'"),
        ({"COLLECTOR_SPEED": "fast"}, "COLLECTOR_SPEED"),
    ],
)
def test_bad_market_data_settings_stop_start_up(settings, overrides, message):
    for name, value in overrides.items():
        setattr(settings, name, value)
    with pytest.raises(SystemCheckError, match=message):
        call_command("check")


def test_default_market_data_settings_pass(settings):
    call_command("check")
