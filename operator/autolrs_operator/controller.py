"""One reconcile pass with its I/O: observe the job, ask the pure planner, apply the plan."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Mapping

import kopf

from autolrs_operator import metrics
from autolrs_operator.builders import operator_store_url
from autolrs_operator.constants import rendezvous_service_name, worker_selector
from autolrs_operator.kube import KubeApi, KubeError
from autolrs_operator.reconcile import Plan, plan, reject, rejection_error
from autolrs_operator.settings import OperatorSettings
from autolrs_operator.spec import SpecError, parse_spec, store_url_problem

_LOG = logging.getLogger(__name__)
_BAD_SECRET_URLS: set[tuple[str, str, str, str]] = set()  # reported once each


class Refused(Exception):
    """The API server refused to create an object of the plan (KubeError.rejected)."""

    def __init__(self, obj: Mapping[str, Any], error: KubeError) -> None:
        super().__init__(str(error))
        self.obj = obj
        self.error = error


async def reconcile(
    api: KubeApi,
    settings: OperatorSettings,
    phases: metrics.PhaseBook,
    namespace: str,
    name: str,
    logger: logging.Logger | logging.LoggerAdapter,
) -> Plan | None:
    """Run one pass for the job; None when the job is gone or being deleted."""
    started = time.perf_counter()
    job = await asyncio.to_thread(api.get_job, namespace, name)
    if job is None or job.get("metadata", {}).get("deletionTimestamp"):
        return None
    pods, service_exists = await asyncio.gather(
        asyncio.to_thread(api.list_worker_pods, namespace, worker_selector(name)),
        asyncio.to_thread(api.service_exists, namespace, rendezvous_service_name(name)),
    )
    decided = plan(
        job, pods, service_exists=service_exists, now=dt.datetime.now(dt.timezone.utc),
        backoff=settings.backoff, default_store=settings.default_store,
    )
    try:
        await apply(api, job, decided, logger)
    except Refused as refused:
        reported = await report_refusal(api, settings, job, refused, logger)
        if reported is None:
            return None
        decided = reported
    if decided.phase:
        phases.record(namespace, name, decided.phase)
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    return decided


async def apply(
    api: KubeApi,
    job: Mapping[str, Any],
    decided: Plan,
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Carry out a plan: status first (so a counted failure is recorded before its pod goes).

    An object the API server refuses (Refused) stops the creations after it; the deletions
    and Events are still done, then Refused is raised for report_refusal.
    """
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    if decided.status:
        await asyncio.to_thread(api.patch_job_status, namespace, name, decided.status)
        if "phase" in decided.status:
            logger.info(f"phase -> {decided.status['phase']}")
    if decided.restarts_counted:
        metrics.POD_RESTARTS.inc(decided.restarts_counted)
    refused: Refused | None = None
    if decided.create_service is not None:
        try:
            if await _create(api, decided.create_service):
                logger.info(f"created Service {decided.create_service['metadata']['name']}")
        except Refused as exc:
            refused = exc
    for deletion in decided.delete_pods:
        if await asyncio.to_thread(api.delete_pod, namespace, deletion.name, deletion.uid):
            logger.info(f"deleted worker pod {deletion.name}")
    for pod in decided.create_pods if refused is None else []:
        try:
            if await _create(api, pod):
                logger.info(f"created worker pod {pod['metadata']['name']}")
        except Refused as exc:
            refused = exc
            break
    for event in decided.events:
        kopf.event(dict(job), type=event.type, reason=event.reason, message=event.message)
    if refused is not None:
        raise refused


async def _create(api: KubeApi, obj: Mapping[str, Any]) -> bool:
    """api.create, with a refusal of the object itself raised as Refused (others as they are)."""
    try:
        return await asyncio.to_thread(api.create, obj)
    except KubeError as exc:
        if exc.rejected:
            raise Refused(obj, exc) from exc
        raise


async def report_refusal(
    api: KubeApi,
    settings: OperatorSettings,
    job: Mapping[str, Any],
    refused: Refused,
    logger: logging.Logger | logging.LoggerAdapter,
) -> Plan | None:
    """Record on the job that the API server refused one of its objects: Failed/InvalidSpec
    and a Warning Event, planned on a fresh read of the job and its pods (None: job gone)."""
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    error = rejection_error(
        job, refused.obj, refused.error.message, refused.error.fields,
        default_store=settings.default_store,
    )
    fresh = await asyncio.to_thread(api.get_job, namespace, name)
    if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
        return None
    fresh_meta = fresh.get("metadata") or {}
    if (fresh_meta.get("uid"), fresh_meta.get("generation")) != (meta.get("uid"), meta.get("generation")):
        return Plan(requeue_after=0.0)  # refused for a spec that is no longer there: plan anew
    pods, service_exists = await asyncio.gather(
        asyncio.to_thread(api.list_worker_pods, namespace, worker_selector(name)),
        asyncio.to_thread(api.service_exists, namespace, rendezvous_service_name(name)),
    )
    decided = reject(
        fresh, pods, error, service_exists=service_exists, now=dt.datetime.now(dt.timezone.utc),
        backoff=settings.backoff, default_store=settings.default_store,
    )
    if decided.events:
        kind, obj_name = refused.obj.get("kind"), refused.obj["metadata"]["name"]
        logger.warning(f"the API server refused {kind} {obj_name} (HTTP {refused.error.status}): {error}")
    await apply(api, fresh, decided, logger)
    return decided


def store_url_for(
    api: KubeApi, settings: OperatorSettings, namespace: str, spec: Mapping[str, Any]
) -> str | None:
    """The Redis URL the operator reads the job's progress from (None: not Redis, or invalid)."""
    try:
        store = parse_spec(spec, default_store=settings.default_store).state_store
    except SpecError:
        return None
    if store is None:
        return None
    secret_value = None
    if store.secret is not None:
        secret_value = api.read_secret_key(namespace, store.secret.name, store.secret.key)
    url = operator_store_url(store, secret_value)
    if url is None or not url.startswith(("redis://", "rediss://")):
        return None
    problem = store_url_problem(url)
    if problem is not None:  # only a Secret's URL gets here unchecked: parse_spec checks the spec's
        ref = store.secret
        key = (namespace, ref.name if ref else "", ref.key if ref else "", problem)
        if key not in _BAD_SECRET_URLS:
            _BAD_SECRET_URLS.add(key)
            _LOG.warning(f"the state store URL of Secret {namespace}/{key[1]} (key {key[2]}) {problem}")
        return None
    return url
