"""State stores: where the controller state, the decision log and the heartbeat live.

``open_store(url)`` picks the backend from ``AUTOLRS_STORE_URL``: ``file://DIR`` (the
embedded default, no services needed) or ``redis://...`` (shared by every pod of a job).
"""

from autolrs.stores.base import StaleWriterError, StateStore, StoreUnavailableError
from autolrs.stores.factory import STORE_URL_ENV, open_store

__all__ = ["StateStore", "StaleWriterError", "StoreUnavailableError", "open_store", "STORE_URL_ENV"]
