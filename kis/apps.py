from django.apps import AppConfig


class KisConfig(AppConfig):
    name = "kis"
    verbose_name = "KIS Open API"
