"""Render the chart with real helm; validate objects against Kubernetes and CRD schemas."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "autolrs-operator"
OLDEST_KUBERNETES = "1.30.0"
NEWEST_KUBERNETES = kv.latest_version()
RELEASE = "ci"
NAMESPACE = "ml-platform"


def real_helm(home: Path) -> "Helm":
    """helm v4 from .tools/bin (scripts/install-tools.sh installs it when missing)."""
    binary = REPO_ROOT / ".tools" / "bin" / "helm"
    if not os.access(binary, os.X_OK):
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-tools.sh")], check=True)
    return Helm(binary, home)


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its output."""


@dataclass
class Helm:
    """The helm binary with a private HOME (cache, config, data) for the tests."""

    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin",
               "HELM_CACHE_HOME": str(self.home / "cache"),
               "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_DATA_HOME": str(self.home / "data")}
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              env=env, timeout=120)

    def _values_file(self, values: dict) -> Path:
        path = self.home / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(self, values: dict | None = None, *, kube_version: str = NEWEST_KUBERNETES,
                 include_crds: bool = False, namespace: str = NAMESPACE,
                 api_versions: tuple[str, ...] = ()) -> list[dict]:
        """`helm template` the chart; the rendered objects, parsed."""
        args = ["template", RELEASE, str(CHART_DIR), "--namespace", namespace,
                "--kube-version", kube_version, "-f", str(self._values_file(values or {}))]
        if include_crds:
            args.append("--include-crds")
        for api_version in api_versions:
            args += ["--api-versions", api_version]
        result = self.run(*args)
        if result.returncode != 0:
            raise HelmError(f"helm template failed:\n{result.stderr}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_error(self, values: dict) -> str:
        """`helm template` with values that must be rejected; helm's error message."""
        result = self.run("template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                          "-f", str(self._values_file(values)))
        assert result.returncode != 0, f"helm accepted values it must reject: {values}"
        return result.stderr

    def lint(self, values: dict | None = None) -> subprocess.CompletedProcess:
        """`helm lint --strict` the chart with these values."""
        return self.run("lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE,
                        "-f", str(self._values_file(values or {})))

    def notes(self, values: dict | None = None) -> str:
        """The NOTES.txt shown after `helm install` (client-side dry run)."""
        result = self.run("install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                          "--dry-run=client", "-f", str(self._values_file(values or {})))
        if result.returncode != 0:
            raise HelmError(result.stderr)
        return result.stdout.split("NOTES:", 1)[1]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    """The objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    """The single object of `kind` whose name ends with `name_suffix`."""
    matches = [obj for obj in by_kind(objects, kind)
               if obj["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, found {len(matches)}"
    return matches[0]


@functools.lru_cache(maxsize=None)
def _kubernetes_validator(version: str, kind: str, api_version: str):
    """Draft 2020-12 validator of kubernetes-validate's strict schema, or None if not built-in."""
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][-1]
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv.schema_contents(f"{schema_dir}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kubernetes_errors(obj: dict, version: str) -> list[str] | None:
    """Every schema error of a built-in object (strict: unknown fields too); None for CRs."""
    validator = _kubernetes_validator(version, obj["kind"], obj["apiVersion"])
    if validator is None:
        return None
    return [f"{obj['kind']}/{obj['metadata'].get('name')}: "
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in validator.iter_errors(obj)]


def crd_schema(crd: dict, version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD's served version (the storage version by default)."""
    versions = crd["spec"]["versions"]
    chosen = [v for v in versions if (v["name"] == version if version else v.get("storage"))]
    assert chosen, f"{crd['metadata']['name']} has no version {version}"
    return chosen[0]["schema"]["openAPIV3Schema"]


def custom_resource_errors(obj: dict, crds: list[dict]) -> list[str]:
    """Errors of a custom resource against its CRD's OpenAPI v3 schema."""
    group, _, version = obj["apiVersion"].rpartition("/")
    for crd in crds:
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == obj["kind"]:
            validator = OAS30Validator(crd_schema(crd, version))
            return [f"{obj['kind']}/{obj['metadata'].get('name')}: "
                    f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
                    for error in validator.iter_errors(obj)]
    raise AssertionError(f"no CRD for {obj['apiVersion']} {obj['kind']}")
