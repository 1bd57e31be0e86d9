"""The Helm chart, rendered by real helm with several values sets and validated.

Every built-in object is checked strictly against the Kubernetes 1.30 and the newest
bundled schemas (kubernetes-validate), custom resources against their CRDs, and the
wiring between objects (selectors, ports, names, probes, security) is checked directly.
"""

from __future__ import annotations

import base64
import json
import re
import shlex

import pytest
import yaml

from tests.helpers.chart_render import (
    CHART_DIR,
    NAMESPACE,
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    RELEASE,
    by_kind,
    custom_resource_errors,
    kubernetes_errors,
    one,
)

VALUES_SETS = {
    "defaults": {},
    "external-redis": {"stateStore": {"mode": "external", "external": {
        "url": "rediss://redis.infra.svc:6380/2", "existingSecret": "redis-auth",
        "passwordKey": "password"}}},
    "monitoring-on": {"monitoring": {"prometheusOperator": {"enabled": True}}},
    "namespaced-rbac": {"rbac": {"scope": "namespaced", "namespaces": ["team-a", "team-b"]}},
    "standby-replica": {"operator": {"replicas": 2}},
    "namespaced-standby-monitoring": {
        "rbac": {"scope": "namespaced"}, "operator": {"replicas": 3, "logLevel": "debug"},
        "monitoring": {"prometheusOperator": {"enabled": True}}},
    "minimal": {
        "stateStore": {"mode": "none"}, "metrics": {"service": {"enabled": False}},
        "monitoring": {"grafanaDashboard": {"enabled": False}},
        "serviceAccount": {"create": False, "name": "existing-sa"},
        "rbac": {"clusterDiscovery": False},
        "image": {"digest": "sha256:" + "ab" * 32}},
    "redis-ephemeral-existing-secret": {"stateStore": {"redis": {
        "existingSecret": "my-redis", "persistence": {"enabled": False},
        "networkPolicy": {"allowedNamespaces": ["research"]}}}},
}
MONITORING_CRDS = ("monitoring.coreos.com/v1",)
VALUES_SETS_METRICS_PORT = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["operator"]["metricsPort"]


@pytest.fixture(scope="module")
def rendered(helm) -> dict[tuple[str, str], list[dict]]:
    """Every values set rendered for the oldest and the newest Kubernetes version."""
    return {(name, version): helm.template(values, kube_version=version, include_crds=True)
            for name, values in VALUES_SETS.items()
            for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES)}


@pytest.fixture(scope="module")
def chart_crds() -> list[dict]:
    """The CRDs the chart ships in crds/."""
    return [doc for path in sorted((CHART_DIR / "crds").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _objects(rendered, name: str) -> list[dict]:
    return [obj for obj in rendered[(name, NEWEST_KUBERNETES)]
            if obj["kind"] != "CustomResourceDefinition"]


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def _container(obj: dict, name: str) -> dict:
    (container,) = [c for c in _pod_spec(obj)["containers"] if c["name"] == name]
    return container


@pytest.mark.parametrize("name", VALUES_SETS)
def test_helm_lint_strict(helm, name):
    result = helm.lint(VALUES_SETS[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("name", VALUES_SETS)
def test_every_object_validates_against_kubernetes(rendered, chart_crds, name, version):
    errors, unchecked = [], []
    for obj in rendered[(name, version)]:
        found = kubernetes_errors(obj, version)
        if found is not None:
            errors += found
        elif obj["apiVersion"].startswith("kopf.dev/"):
            errors += custom_resource_errors(obj, chart_crds)
        else:
            unchecked.append(obj["apiVersion"])
    assert not errors, "\n".join(errors)
    # Objects of the Prometheus Operator have no schema here; test_monitoring_objects checks them.
    assert set(unchecked) <= set(MONITORING_CRDS), unchecked


def test_values_sets_render_what_they_promise(rendered):
    kinds = {name: {obj["kind"] for obj in _objects(rendered, name)} for name in VALUES_SETS}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "StatefulSet",
            "Secret", "NetworkPolicy", "ConfigMap", "Service"} <= kinds["defaults"]
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Role"} & kinds["defaults"]
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds["monitoring-on"]
    assert not {"StatefulSet", "Secret", "NetworkPolicy"} & kinds["external-redis"]
    assert {"Role", "RoleBinding"} <= kinds["namespaced-rbac"]
    assert "ClusterKopfPeering" in kinds["standby-replica"]
    assert "KopfPeering" in kinds["namespaced-standby-monitoring"]
    assert not {"StatefulSet", "ServiceAccount", "Service", "ConfigMap"} & kinds["minimal"]
    assert "Secret" not in kinds["redis-ephemeral-existing-secret"]


def test_chart_ships_the_crds(rendered):
    names = {obj["metadata"]["name"] for obj in rendered[("defaults", NEWEST_KUBERNETES)]
             if obj["kind"] == "CustomResourceDefinition"}
    assert {"autolrsjobs.autolrs.io", "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev"} <= names


@pytest.mark.parametrize("name", VALUES_SETS)
def test_objects_live_in_the_release_namespace(rendered, name):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    watched = {"team-a", "team-b"} if name == "namespaced-rbac" else {NAMESPACE}
    for obj in _objects(rendered, name):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]["name"]
        elif obj["kind"] in {"Role", "RoleBinding", "KopfPeering"}:
            assert namespace in watched
        elif obj["kind"] == "Secret":
            job_namespaces = watched if name == "namespaced-rbac" else {"default"}
            assert namespace in job_namespaces | {NAMESPACE}, "password copies go to job namespaces"
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_names_fit_dns_labels_with_the_longest_release_name(helm, scope):
    result = helm.run("template", "r" * 53, str(CHART_DIR), "--namespace", NAMESPACE,
                      "--set", "operator.replicas=2", "--set", f"rbac.scope={scope}",
                      "--set", "monitoring.prometheusOperator.enabled=true")
    assert result.returncode == 0, result.stderr
    names_by_kind: dict[str, list[str]] = {}  # "Kind in namespace" -> names
    for obj in (doc for doc in yaml.safe_load_all(result.stdout) if doc):
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        if obj["kind"] == "StatefulSet":
            # Its pods get the label controller-revision-hash=<name>-<10 chars>.
            assert len(obj["metadata"]["name"]) <= 52, obj["metadata"]["name"]
        # One name per kind and namespace (the password Secret has one copy per job namespace).
        where = f"{obj['kind']} in {obj['metadata'].get('namespace', 'the cluster')}"
        names_by_kind.setdefault(where, []).append(obj["metadata"]["name"])
    for where, names in names_by_kind.items():
        assert len(names) == len(set(names)), f"{where}: names collide after truncation: {names}"


def _kopf_argv(deployment: dict) -> list[str]:
    container = _container(deployment, "operator")
    if container["command"][:2] == ["/bin/bash", "-c"]:
        return shlex.split(container["args"][0].removeprefix("exec "))
    return container["command"]


def test_operator_runs_kopf_standalone_with_liveness_probes(rendered):
    deployment = one(_objects(rendered, "defaults"), "Deployment")
    argv = _kopf_argv(deployment)
    assert argv[:4] == ["kopf", "run", "-m", "autolrs_operator"]
    assert "--standalone" in argv and "--all-namespaces" in argv
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = _container(deployment, "operator")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert f"--liveness=http://0.0.0.0:{ports['liveness']}/healthz" in argv
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert "readinessProbe" not in container, "kopf advises against readiness probes"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_standby_replicas_use_kopf_peering(rendered):
    objects = _objects(rendered, "standby-replica")
    deployment = one(objects, "Deployment")
    argv = _kopf_argv(deployment)
    assert "--standalone" not in argv
    peering = one(objects, "ClusterKopfPeering")["metadata"]["name"]
    assert f"--peering={peering}" in argv
    assert any(arg.startswith("--priority=$((RANDOM") for arg in argv), \
        "each replica needs its own kopf priority"
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]
    env = {e["name"]: e for e in _container(deployment, "operator")["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_namespaced_scope_watches_only_its_namespaces(rendered):
    objects = _objects(rendered, "namespaced-rbac")
    argv = _kopf_argv(one(objects, "Deployment"))
    assert "--all-namespaces" not in argv
    assert [a for a in argv if a.startswith("--namespace=")] == \
        ["--namespace=team-a", "--namespace=team-b"]
    objects = _objects(rendered, "namespaced-standby-monitoring")
    argv = _kopf_argv(one(objects, "Deployment"))
    assert [a for a in argv if a.startswith("--namespace=")] == [f"--namespace={NAMESPACE}"]
    assert "--debug" in argv
    (peering,) = by_kind(objects, "KopfPeering")
    assert peering["metadata"]["namespace"] == NAMESPACE
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def _assert_restricted(pod_spec: dict, where: str) -> None:
    """Pod Security Standard "restricted", plus a read-only root filesystem."""
    pod_context = pod_spec["securityContext"]
    assert pod_context["runAsNonRoot"] is True, where
    assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", where
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert not context["capabilities"].get("add"), where
        assert context["readOnlyRootFilesystem"] is True, where
        assert not context.get("privileged"), where
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID"), where
    for volume in pod_spec.get("volumes", []):
        assert "hostPath" not in volume, where


@pytest.mark.parametrize("name", VALUES_SETS)
def test_pods_meet_the_restricted_pod_security_standard(rendered, name):
    for obj in _objects(rendered, name):
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            _assert_restricted(_pod_spec(obj), f"{name}: {obj['kind']}")


@pytest.mark.parametrize("name", VALUES_SETS)
def test_services_select_pods_and_ports_of_this_chart(rendered, name):
    objects = _objects(rendered, name)
    workloads = [obj for obj in objects if obj["kind"] in {"Deployment", "StatefulSet"}]
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        targets = [w for w in workloads
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)}"
        port_names = {port["name"] for c in _pod_spec(targets[0])["containers"]
                      for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_bundled_redis_is_durable_and_password_protected(rendered):
    objects = _objects(rendered, "defaults")
    statefulset = one(objects, "StatefulSet", "-redis")
    assert statefulset["spec"]["replicas"] == 1
    config = one(objects, "ConfigMap", "-redis")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in config and "appendfsync everysec" in config
    assert "maxmemory-policy noeviction" in config
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    container = _container(statefulset, "redis")
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert '--requirepass "$REDIS_PASSWORD"' in container["args"][0]
    secret = one([obj for obj in objects if obj["metadata"].get("namespace") == NAMESPACE], "Secret", "-redis")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": secret["metadata"]["name"], "key": "redis-password"}
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) == 32 and password.isalnum()
    assert container["image"].startswith("redis:7.") and not container["image"].endswith(":latest")


def test_redis_with_existing_secret_and_no_persistence(rendered):
    objects = _objects(rendered, "redis-ephemeral-existing-secret")
    statefulset = one(objects, "StatefulSet", "-redis")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in _pod_spec(statefulset)["volumes"]}
    assert "emptyDir" in volumes["data"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in _container(statefulset, "redis")["env"]}
    assert env["REDIS_PASSWORD"]["name"] == "my-redis"


def test_networkpolicy_lets_only_the_operator_and_workers_reach_redis(rendered):
    objects = _objects(rendered, "defaults")
    policy = one(objects, "NetworkPolicy")
    redis_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    operator_peer, worker_peer = rule["from"]
    operator_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert operator_peer["podSelector"]["matchLabels"].items() <= operator_labels.items()
    assert "namespaceSelector" not in operator_peer
    assert worker_peer == {"podSelector": {"matchLabels": {"autolrs.io/role": "worker"}},
                           "namespaceSelector": {}}
    for name, namespaces in [("redis-ephemeral-existing-secret", ["research"]),
                             ("namespaced-standby-monitoring", [NAMESPACE])]:
        _, worker_peer = one(_objects(rendered, name), "NetworkPolicy")["spec"]["ingress"][0]["from"]
        assert worker_peer["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]


def test_password_secret_is_copied_to_job_namespaces(rendered):
    def secrets(name):
        return {(obj["metadata"]["namespace"], obj["metadata"]["name"]): obj["data"]
                for obj in by_kind(_objects(rendered, name), "Secret")}

    # Cluster scope: the release namespace and "default", where the README's example job goes.
    defaults = secrets("defaults")
    assert {namespace for namespace, _ in defaults} == {NAMESPACE, "default"}
    assert len({json.dumps(data) for data in defaults.values()}) == 1, "one password everywhere"
    copies = secrets("namespaced-rbac")
    assert {namespace for namespace, _ in copies} == {NAMESPACE, "team-a", "team-b"}
    assert len({name for _, name in copies}) == 1, "jobs reference the Secret by one name"
    assert len({json.dumps(data) for data in copies.values()}) == 1, "one password everywhere"


def test_notes_tell_jobs_how_to_reach_the_state_store(helm):
    notes = helm.notes({"rbac": {"scope": "namespaced", "namespaces": ["team-a"]}})
    snippet = yaml.safe_load(notes[notes.index("    spec:"):notes.index("Monitoring:")])
    store = snippet["spec"]["stateStore"]
    assert store["url"] == f"redis://{RELEASE}-autolrs-operator-redis.{NAMESPACE}.svc:6379/0"
    assert store["secretRef"] == {"name": f"{RELEASE}-autolrs-operator-redis",
                                  "key": "redis-password"}
    assert f"is in: {NAMESPACE}, team-a." in notes
    notes = helm.notes({})
    assert f"is in: {NAMESPACE}, default." in notes
    assert "kubectl apply -n default -f examples/k8s/minimal.yaml" in notes
    notes = helm.notes(VALUES_SETS["external-redis"])
    snippet = yaml.safe_load(notes[notes.index("    spec:"):notes.index("Monitoring:")])
    assert snippet["spec"]["stateStore"] == {
        "url": "rediss://redis.infra.svc:6380/2",
        "secretRef": {"name": "redis-auth", "key": "password"}}


def _operator_settings(rendered, name):
    """The operator's own settings parser fed the env the chart gives its container."""
    from autolrs_operator.settings import OperatorSettings

    container = _container(one(_objects(rendered, name), "Deployment"), "operator")
    return OperatorSettings.from_env({e["name"]: e["value"] for e in container["env"]
                                      if "value" in e})


def test_operator_reads_the_env_the_chart_sets(rendered):
    settings = _operator_settings(rendered, "defaults")
    assert settings.metrics_port == VALUES_SETS_METRICS_PORT
    redis = one(_objects(rendered, "defaults"), "Service", "-redis")["metadata"]["name"]
    assert settings.default_store.url == f"redis://{redis}.{NAMESPACE}.svc:6379/0"
    assert (settings.default_store.secret.name, settings.default_store.secret.key) == \
        (redis, "redis-password")
    external = _operator_settings(rendered, "external-redis").default_store
    assert external.url == "rediss://redis.infra.svc:6380/2"
    assert (external.secret.name, external.secret.key) == ("redis-auth", "password")
    assert _operator_settings(rendered, "minimal").default_store is None
    liveness = _container(one(_objects(rendered, "defaults"), "Deployment"), "operator")
    assert {p["name"]: p["containerPort"] for p in liveness["ports"]}["metrics"] == \
        settings.metrics_port


def test_image_reference(rendered):
    image = _container(one(_objects(rendered, "defaults"), "Deployment"), "operator")["image"]
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert image == f"autolrs-operator:{chart['appVersion']}"
    image = _container(one(_objects(rendered, "minimal"), "Deployment"), "operator")["image"]
    assert image == "autolrs-operator@sha256:" + "ab" * 32


def test_monitoring_objects_scrape_what_exists(rendered):
    objects = _objects(rendered, "monitoring-on")
    metrics_service = one(objects, "Service", "-metrics")
    service_monitor = one(objects, "ServiceMonitor")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= \
        metrics_service["metadata"]["labels"].items()
    assert service_monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in metrics_service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True and endpoint["path"] == "/metrics"
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {"autolrs.io/role": "worker"}}
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True


def test_prometheusrule_renders_the_rules_file_unchanged(rendered):
    rule = one(_objects(rendered, "monitoring-on"), "PrometheusRule")
    from_file = yaml.safe_load((CHART_DIR / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == {"groups": from_file["groups"]}


def test_grafana_dashboard_configmap_holds_the_dashboard_file(rendered):
    configmap = one(_objects(rendered, "defaults"), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = (CHART_DIR / "files" / "grafana-dashboard.json").read_text()
    assert configmap["data"] == {"autolrs-jobs.json": text}
    assert json.loads(configmap["data"]["autolrs-jobs.json"])["uid"] == "autolrs-jobs"


def test_notes_tell_the_user_how_to_submit_and_follow_a_job(helm):
    notes = helm.notes()
    assert "kubectl apply" in notes and "examples/k8s/" in notes
    for example in re.findall(r"-f (examples/\S+)", notes):
        assert (CHART_DIR.parents[1] / example).is_file(), f"NOTES.txt names {example}: missing"
    assert "kubectl get autolrsjobs" in notes and "kubectl describe autolrsjob" in notes
    assert f"{RELEASE}-autolrs-operator-redis" in notes
    notes = helm.notes({"monitoring": {"prometheusOperator": {"enabled": True}},
                        "operator": {"replicas": 2}})
    assert "PrometheusRule" in notes and "standby" in notes


@pytest.mark.parametrize("values, message", [
    ({"operatr": {"replicas": 1}}, "additional properties 'operatr' not allowed"),
    ({"rbac": {"scope": "global"}}, "/rbac/scope"),
    ({"rbac": {"namespaces": ["Team_A"]}}, "/rbac/namespaces/0"),
    ({"operator": {"replicas": 0}}, "/operator/replicas"),
    ({"operator": {"livenessPort": 70000}}, "/operator/livenessPort"),
    ({"operator": {"logLevel": "loud"}}, "/operator/logLevel"),
    ({"operator": {"metricsPort": 8080}}, "operator.livenessPort and operator.metricsPort must differ"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ({"image": {"tag": "has space"}}, "/image/tag"),
    ({"stateStore": {"mode": "external"}}, "/stateStore/external/url"),
    ({"stateStore": {"mode": "external", "external": {"url": "http://redis:6379"}}},
     "/stateStore/external/url"),
    ({"stateStore": {"mode": "sqlite"}}, "/stateStore/mode"),
    ({"stateStore": {"redis": {"persistence": {"size": "lots"}}}},
     "/stateStore/redis/persistence/size"),
    ({"metrics": {"workerPortName": "metrics"}}, "/metrics"),  # removed knob: refused, not ignored
    ({"monitoring": {"prometheusOperator": {"podMonitor": {"interval": "often"}}}},
     "/monitoring/prometheusOperator/podMonitor/interval"),
    ({"monitoring": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}},
     "/monitoring/grafanaDashboard/labels/grafana_dashboard"),
])
def test_bad_values_fail_with_a_message_naming_them(helm, values, message):
    assert message in helm.template_error(values)
