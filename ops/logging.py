"""Logging into system_logs. (Placeholder: replaced by the batched handler.)"""

import logging


class RedactSecretsFilter(logging.Filter):
    def filter(self, record):
        return True


class SystemLogHandler(logging.Handler):
    def emit(self, record):
        pass
