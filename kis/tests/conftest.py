from kis.testing import fake_kis, kis_settings  # noqa: F401
