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
from autolrs_operator.kube import KubeApi
from autolrs_operator.reconcile import Plan, plan
from autolrs_operator.settings import OperatorSettings
from autolrs_operator.spec import SpecError, parse_spec


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
    await apply(api, job, decided, logger)
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
    """Carry out a plan: status first (so a counted failure is recorded before its pod goes)."""
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    if decided.status:
        await asyncio.to_thread(api.patch_job_status, namespace, name, decided.status)
        if "phase" in decided.status:
            logger.info(f"phase -> {decided.status['phase']}")
    if decided.restarts_counted:
        metrics.POD_RESTARTS.inc(decided.restarts_counted)
    if decided.create_service is not None:
        if await asyncio.to_thread(api.create, decided.create_service):
            logger.info(f"created Service {decided.create_service['metadata']['name']}")
    for deletion in decided.delete_pods:
        if await asyncio.to_thread(api.delete_pod, namespace, deletion.name, deletion.uid):
            logger.info(f"deleted worker pod {deletion.name}")
    for pod in decided.create_pods:
        if await asyncio.to_thread(api.create, pod):
            logger.info(f"created worker pod {pod['metadata']['name']}")
    for event in decided.events:
        kopf.event(dict(job), type=event.type, reason=event.reason, message=event.message)


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
    return url
