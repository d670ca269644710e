from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class QbSiteConfig(AppConfig):
    name = "qbsite"
    verbose_name = "QB site"


class QBAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with qbsite.admin_utils.QBAdminSite as `admin.site`.

    Listed by its path in INSTALLED_APPS; `default = False` keeps QbSiteConfig the config of
    the "qbsite" entry.
    """

    default = False
    default_site = "qbsite.admin_utils.QBAdminSite"
