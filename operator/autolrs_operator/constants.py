"""Names fixed by the contract: the custom resource, labels, ports and worker env vars."""

from __future__ import annotations

GROUP = "autolrs.io"
VERSION = "v1alpha1"
PLURAL = "autolrsjobs"
KIND = "AutoLRSJob"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB = "autolrs.io/job"
LABEL_ROLE = "autolrs.io/role"
LABEL_WORKER_INDEX = "autolrs.io/worker-index"
ROLE_WORKER = "worker"
ROLE_RENDEZVOUS = "rendezvous"

TRAINER_CONTAINER = "trainer"
RDZV_PORT = 29400
TRAINER_METRICS_PORT = 9400
DEFAULT_CHECKPOINT_PATH = "/checkpoints"
CHECKPOINT_VOLUME = "checkpoints"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"  # where SHM_VOLUME (a memory emptyDir) is mounted
NON_ROOT_UID = 10001  # the project image's user (Dockerfile)

ENV_JOB = "AUTOLRS_JOB"
ENV_JOB_UID = "AUTOLRS_JOB_UID"
ENV_CONFIG = "AUTOLRS_CONFIG"
ENV_STORE_URL = "AUTOLRS_STORE_URL"
ENV_STORE_PASSWORD = "AUTOLRS_STORE_PASSWORD"
ENV_CHECKPOINT_DIR = "AUTOLRS_CHECKPOINT_DIR"
ENV_METRICS_PORT = "AUTOLRS_METRICS_PORT"
ENV_POD_IP = "POD_IP"
RESERVED_ENV = frozenset(
    {ENV_JOB, ENV_JOB_UID, ENV_CONFIG, ENV_STORE_URL, ENV_STORE_PASSWORD,
     ENV_CHECKPOINT_DIR, ENV_METRICS_PORT, ENV_POD_IP}
)

RESERVED_VOLUMES = frozenset({CHECKPOINT_VOLUME, SHM_VOLUME})  # user volumes may not take these names

FINALIZER = "autolrs.io/finalizer"


def key_prefix(namespace: str, name: str, uid: str) -> str:
    """The Redis key prefix of one job: ``autolrs:{namespace}:{name}:{uid}:``."""
    return f"autolrs:{namespace}:{name}:{uid}:"


def rendezvous_service_name(job_name: str) -> str:
    """Name of the job's headless rendezvous Service."""
    return f"{job_name}-rdzv"


def worker_pod_name(job_name: str, index: int) -> str:
    """Name of worker pod ``index`` (stable: a replacement reuses its slot's name)."""
    return f"{job_name}-worker-{index}"


def worker_selector(job_name: str) -> str:
    """Label selector (string form) of a job's worker pods."""
    return f"{LABEL_JOB}={job_name},{LABEL_ROLE}={ROLE_WORKER}"
