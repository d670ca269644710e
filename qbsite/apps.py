from django.apps import AppConfig


class QbSiteConfig(AppConfig):
    name = "qbsite"
    verbose_name = "QB site"
