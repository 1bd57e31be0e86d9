"""kopf handlers: each translates a Kubernetes event into calls of the controller's functions."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf
import redis

from autolrs_operator import heartbeat, metrics
from autolrs_operator.constants import (
    FINALIZER, GROUP, LABEL_JOB, LABEL_ROLE, PLURAL, ROLE_WORKER, VERSION, key_prefix,
)
from autolrs_operator.controller import reconcile, store_url_for
from autolrs_operator.kube import KubeApi, load_api_client
from autolrs_operator.reconcile import format_time
from autolrs_operator.settings import OperatorSettings
from autolrs_operator.wakeups import Wakeups

SETTINGS = OperatorSettings.from_env()
WAKEUPS = Wakeups()
PHASES = metrics.PhaseBook()
_API: list[KubeApi] = []
_REDIS: dict[str, redis.Redis] = {}
DELETE_RETRIES = 3


def _api() -> KubeApi:
    if not _API:
        _API.append(KubeApi(load_api_client()))
    return _API[0]


def _redis(url: str) -> redis.Redis:
    if url not in _REDIS:
        _REDIS[url] = heartbeat.connect(url)
    return _REDIS[url]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations, post only warnings as Events, serve metrics."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    _api()
    if SETTINGS.metrics_port:
        metrics.serve(SETTINGS.metrics_port)
        logger.info(f"operator metrics on :{SETTINGS.metrics_port}/metrics")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def supervise(
    stopped: kopf.DaemonStopped, namespace: str, name: str, logger: logging.Logger, **_: Any
) -> None:
    """The job's control loop: reconcile, then sleep until a pod or the spec changes."""
    while not stopped:
        decided = await reconcile(_api(), SETTINGS, PHASES, namespace, name, logger)
        if decided is None:
            return
        delay = SETTINGS.resync_seconds
        if decided.requeue_after is not None:
            delay = min(delay, decided.requeue_after)
        await _sleep(stopped, namespace, name, delay)


async def _sleep(stopped: kopf.DaemonStopped, namespace: str, name: str, delay: float) -> None:
    """Sleep until woken, stopped (deletion, shutdown) or ``delay`` seconds passed."""
    woken = asyncio.ensure_future(WAKEUPS.wait(namespace, name, delay))
    halted = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({woken, halted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, halted):
            task.cancel()


@kopf.on.event("v1", "pods", labels={LABEL_ROLE: ROLE_WORKER, LABEL_JOB: kopf.PRESENT})
def worker_pod_changed(namespace: str, labels: kopf.Labels, **_: Any) -> None:
    """A worker pod appeared, changed phase or went away: wake its job."""
    WAKEUPS.notify(namespace, labels[LABEL_JOB])


@kopf.on.event(GROUP, VERSION, PLURAL)
def job_changed(
    namespace: str, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> None:
    """The spec changed (scale, suspend, edit): wake the job's control loop."""
    if meta.get("generation") != status.get("observedGeneration"):
        WAKEUPS.notify(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.status_interval_seconds)
async def sync_trainer_status(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    namespace: str,
    name: str,
    uid: str,
    patch: kopf.Patch,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Copy the trainer's Redis heartbeat into status; post stage decisions and rollbacks as Events."""
    url = await asyncio.to_thread(store_url_for, _api(), SETTINGS, namespace, dict(spec))
    if url is None:
        return
    try:
        progress = await asyncio.to_thread(
            heartbeat.read_progress, _redis(url), key_prefix(namespace, name, uid),
            status.get("lastDecisionId"),
        )
    except redis.RedisError as exc:
        logger.warning(f"cannot read the trainer's progress from the state store: {exc}")
        return
    fields: dict[str, Any] = {}
    if progress.heartbeat is not None:
        fields.update(heartbeat.status_from_heartbeat(progress.heartbeat))
    for decision in progress.decisions:
        posted = heartbeat.job_event(decision)
        if posted is not None:
            kopf.event(body, type=posted[0], reason=posted[1], message=posted[2])
    if progress.decisions:
        fields["lastDecisionId"] = progress.decisions[-1].id
    changed = {key: value for key, value in fields.items() if status.get(key) != value}
    if changed:
        changed["heartbeatTime"] = format_time(dt.datetime.now(dt.timezone.utc))
        patch.status.update(changed)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def expire_state(
    namespace: str, name: str, uid: str, spec: kopf.Spec, retry: int, logger: logging.Logger,
    **_: Any,
) -> None:
    """The job is being deleted: give its Redis keys an expiry (children go by ownerReferences)."""
    PHASES.forget(namespace, name)
    WAKEUPS.forget(namespace, name)
    url = await asyncio.to_thread(store_url_for, _api(), SETTINGS, namespace, dict(spec))
    if url is None:
        return
    prefix = key_prefix(namespace, name, uid)
    try:
        count = await asyncio.to_thread(
            heartbeat.expire_job_keys, _redis(url), prefix, SETTINGS.key_ttl_seconds
        )
    except redis.RedisError as exc:
        if retry < DELETE_RETRIES:
            raise kopf.TemporaryError(f"cannot reach the state store to expire {prefix}*: {exc}", delay=5)
        logger.error(f"gave up expiring {prefix}* after {retry + 1} tries: {exc}")
        return
    logger.info(f"{count} Redis key(s) under {prefix} expire in {SETTINGS.key_ttl_seconds}s")
