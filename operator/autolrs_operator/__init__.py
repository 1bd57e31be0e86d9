"""The AutoLRSJob operator (kopf). Importing this package registers the handlers."""

from autolrs_operator import handlers  # noqa: F401  (registers the kopf handlers)
