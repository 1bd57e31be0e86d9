"""open_store(url): choose the state-store backend from a URL."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from autolrs.stores.base import StateStore

STORE_URL_ENV = "AUTOLRS_STORE_URL"
STORE_PASSWORD_ENV = "AUTOLRS_STORE_PASSWORD"


def open_store(url: str, job_key: str | None = None, password: str | None = None) -> StateStore:
    """``file:///abs/dir`` or ``file://rel/dir`` -> FileStore; ``redis://``/``rediss://`` -> RedisStore.

    ``job_key`` is the Redis key prefix (``autolrs:{namespace}:{name}:{uid}:``);
    ``password`` (the operator's ``AUTOLRS_STORE_PASSWORD``, raw: no URL encoding needed)
    is used when the URL carries none.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if password:
            raise ValueError(f"{STORE_PASSWORD_ENV} is set, but {STORE_URL_ENV} is a file:// "
                             "store, which takes no password")
        from autolrs.stores.file import FileStore

        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise ValueError(f"{STORE_URL_ENV}: file URL needs a path, got {url!r}")
        return FileStore(os.path.expanduser(path))
    if parsed.scheme in ("redis", "rediss", "unix"):
        from autolrs.stores.redis import RedisStore

        return RedisStore(url, job_key=job_key, password=password)
    raise ValueError(
        f"{STORE_URL_ENV} must start with file:// or redis:// (or rediss://), got {url!r}"
    )
