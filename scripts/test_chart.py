#!/usr/bin/env python3
"""Tests of the Helm chart deploy/helm/iot-authz, offline: no cluster, no network.

Renders and lints the chart with the Helm 4 library bundled in the PyPI package
`helm-python-sdk` (import name `helm_python`), validates every rendered manifest against
the Kubernetes JSON schemas of the PyPI package `kubernetes-validate` in strict mode
(unknown fields fail), and asserts what matters: the pod's security settings, the three
probes, the policy ConfigMap mounted as a directory exactly where `--policy` points, the
policy sources, the optional objects, the values schema, NOTES.txt and deploy/istio/.

    .venv/bin/pip install -r scripts/requirements-test.txt
    .venv/bin/python scripts/test_chart.py

Ends with the line `N passed, N failed`; exits non-zero when any test fails.
"""

from __future__ import annotations

import copy
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "iot-authz"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
ISTIO = ROOT / "deploy" / "istio"
RELEASE, NAMESPACE = "iot-authz", "iot-authz"
POLICY_DIR = "/etc/iot-authz/policy"
# The oldest and the newest Kubernetes versions whose schemas kubernetes-validate ships.
K8S_VERSIONS = sorted({all_versions()[0], all_versions()[-1]})
# Kinds without a schema in kubernetes-validate (CRDs); asserted structurally instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

_chart: helm.Chart | None = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART)
    return _chart


def all_on_values() -> dict[str, Any]:
    return helm.values_from_yaml(ALL_ON.read_text())


class Rendered:
    """One rendering: the manifests as dicts, and NOTES.txt as text."""

    def __init__(self, values: dict[str, Any] | None, name: str, namespace: str):
        files = chart().render(values, name=name, namespace=namespace)
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    assert isinstance(doc, dict), f"{path}: not a mapping"
                    doc.setdefault("_source", path)
                    self.objects.append(doc)

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def container(self) -> dict[str, Any]:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, containers
        return containers[0]

    def pod_spec(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]


def render(
    values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE
) -> Rendered:
    return Rendered(values, name, namespace)


def with_values(base: dict[str, Any] | None, **overrides: Any) -> dict[str, Any]:
    """`base` with dotted-path overrides: with_values(v, **{"bundle.url": "..."})."""
    values = copy.deepcopy(base) if base else {}
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def render_fails(values: dict[str, Any], expect_in_message: str) -> None:
    try:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    except helm.HelmError as e:
        assert expect_in_message in str(e), f"unexpected error: {e}"
        return
    raise AssertionError(f"rendering {values} should have failed")


def schema_rejects(values: dict[str, Any], expect_in_message: str = "") -> None:
    try:
        chart().validate_schema(chart().merge_values(values))
    except helm.HelmValuesError as e:
        assert expect_in_message in str(e), f"unexpected schema error: {e}"
    else:
        raise AssertionError(f"values.schema.json accepted {values}")
    # Rendering (what helm install/template does) must refuse them too.
    render_fails(values, expect_in_message)


def args_of(r: Rendered) -> list[str]:
    return [str(a) for a in r.container()["args"]]


def flag(args: list[str], name: str) -> str | None:
    """The value after `name`, or None when the flag is absent."""
    if name not in args:
        return None
    i = args.index(name)
    assert args.count(name) == 1, f"{name} given twice: {args}"
    assert i + 1 < len(args), f"{name} has no value: {args}"
    return args[i + 1]


def volume(r: Rendered, name: str) -> dict[str, Any]:
    volumes = {v["name"]: v for v in r.pod_spec().get("volumes", [])}
    assert name in volumes, f"no volume {name}: {sorted(volumes)}"
    return volumes[name]


def mounts(r: Rendered) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in r.container().get("volumeMounts", [])}


def configmap_volumes(r: Rendered) -> list[dict[str, Any]]:
    return [v for v in r.pod_spec().get("volumes", []) if "configMap" in v]


def validate_k8s(r: Rendered) -> int:
    """Strict schema validation of every manifest; returns how many were validated."""
    validated = 0
    for obj in r.objects:
        doc = {k: v for k, v in obj.items() if k != "_source"}
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(
                    f"{obj['_source']}: {doc['kind']} invalid for Kubernetes {version} "
                    f"at {path}: {e.message}"
                ) from None
        validated += 1
    return validated


def lint_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, f"helm lint: {report}"
    assert report["total_charts_linted"] == 1, report


# --- tests ----------------------------------------------------------------------------

TESTS: list[Callable[[], None]] = []


def test(fn: Callable[[], None]) -> Callable[[], None]:
    TESTS.append(fn)
    return fn


@test
def chart_metadata_is_v2_with_a_draft07_schema() -> None:
    meta = chart().metadata
    assert meta["apiVersion"] == "v2", meta
    assert meta["name"] == "iot-authz", meta
    schema = chart().schema
    assert schema is not None, "values.schema.json missing"
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#", schema["$schema"]
    assert schema["additionalProperties"] is False
    for key in ("image", "policy", "bundle", "service", "autoscaling", "podDisruptionBudget",
                "serviceMonitor", "networkPolicy", "decisionCache", "decisionLog", "server",
                "tls", "serviceAccount", "store"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    assert chart().values["replicaCount"] == 2
    assert chart().values["demo"] is False


@test
def lint_default_values() -> None:
    lint_clean(None)


@test
def lint_all_on_values() -> None:
    lint_clean(all_on_values())


@test
def kubernetes_validate_is_strict() -> None:
    # The validator itself must reject a misspelt field, or the checks below prove nothing.
    deployment = {k: v for k, v in render().one("Deployment").items() if k != "_source"}
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    try:
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("strict validation accepted a misspelt container field")


@test
def default_values_render_valid_manifests() -> None:
    r = render()
    assert r.kinds() == sorted(
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    ), r.kinds()
    assert validate_k8s(r) == 5


@test
def all_on_values_render_valid_manifests() -> None:
    r = render(all_on_values())
    assert r.kinds() == sorted([
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
        "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor",
    ]), r.kinds()
    assert validate_k8s(r) == 7  # all but the ServiceMonitor (a CRD)


@test
def security_context_is_locked_down() -> None:
    for r in (render(), render(all_on_values())):
        pod = r.pod_spec()["securityContext"]
        c = r.container()["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, pod
        assert c["runAsNonRoot"] is True, c
        assert c["runAsUser"] == 65532 and c["runAsGroup"] == 65532, c
        assert c["readOnlyRootFilesystem"] is True, c
        assert c["allowPrivilegeEscalation"] is False, c
        assert c["capabilities"]["drop"] == ["ALL"], c
        assert "add" not in c["capabilities"], c
        assert c["seccompProfile"]["type"] == "RuntimeDefault", c
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", pod
        assert r.pod_spec()["automountServiceAccountToken"] is False
        resources = r.container()["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), resources


@test
def three_probes_http_and_grpc() -> None:
    for r in (render(), render(all_on_values())):
        c = r.container()
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": 50051, "http": 8181}, ports
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, c
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, c
        assert c["startupProbe"]["grpc"]["port"] == 50051, c["startupProbe"]
        assert "httpGet" not in c["startupProbe"], c["startupProbe"]


@test
def serve_args_and_listen_addresses() -> None:
    args = args_of(render())
    assert args[:7] == ["serve", "--grpc-addr", "0.0.0.0:50051", "--http-addr",
                        "0.0.0.0:8181", "--log-format", "json"], args
    assert flag(args, "--decision-cache-size") == "0", args


@test
def policy_configmap_is_a_directory_mount_where_policy_points() -> None:
    for values in (None, all_on_values()):
        r = render(values)
        args = args_of(r)
        policy_dir = flag(args, "--policy")
        assert policy_dir == POLICY_DIR, args
        assert flag(args, "--policy-url") is None, args
        cm = r.one("ConfigMap")
        cm_volumes = configmap_volumes(r)
        assert len(cm_volumes) == 1, cm_volumes
        vol = cm_volumes[0]
        assert vol["configMap"]["name"] == cm["metadata"]["name"], (vol, cm["metadata"])
        assert "items" not in vol["configMap"], "items would hide documents added later"
        mount = mounts(r)[vol["name"]]
        assert mount["mountPath"] == policy_dir, mount
        assert mount.get("readOnly") is True, mount
        for m in r.container()["volumeMounts"]:
            assert "subPath" not in m and "subPathExpr" not in m, f"subPath mount: {m}"
        expected = set((values or {}).get("policy", {}).get("documents", {})) or {
            "00-deny-all.yaml"}
        assert set(cm["data"]) == expected, cm["data"]


@test
def default_policy_is_deny_all_not_the_demo() -> None:
    r = render()
    data = r.one("ConfigMap")["data"]
    assert list(data) == ["00-deny-all.yaml"], data
    assert yaml.safe_load(data["00-deny-all.yaml"]) == {"version": 1}, data
    assert "deny-all" in r.notes and "DEMO" not in r.notes


@test
def documents_are_rendered_verbatim() -> None:
    values = all_on_values()
    data = render(values).one("ConfigMap")["data"]
    assert data == values["policy"]["documents"], data


@test
def bundle_url_renders_policy_url_and_no_configmap() -> None:
    url = "https://bundles.example.com/iot-authz/policy.tar.gz"
    r = render(with_values(None, **{"bundle.url": url, "bundle.intervalSeconds": 15}))
    args = args_of(r)
    assert flag(args, "--policy-url") == url, args
    assert flag(args, "--policy-url-interval-seconds") == "15", args
    assert "--policy" not in args and "--policy-url-token-file" not in args, args
    assert r.all("ConfigMap") == [], r.kinds()
    assert configmap_volumes(r) == [], r.pod_spec()["volumes"]
    assert "policy" not in mounts(r), mounts(r)
    validate_k8s(r)


@test
def bundle_token_secret_is_a_directory_mount() -> None:
    url = "https://bundles.example.com/policy.yaml"
    r = render(with_values(None, **{"bundle.url": url,
                                    "bundle.tokenSecret": {"name": "bundle-token",
                                                           "key": "bearer"}}))
    args = args_of(r)
    token_file = flag(args, "--policy-url-token-file")
    assert token_file is not None, args
    vol = volume(r, "bundle-token")
    assert vol["secret"]["secretName"] == "bundle-token", vol
    assert vol["secret"]["items"] == [{"key": "bearer", "path": "token"}], vol
    mount = mounts(r)["bundle-token"]
    assert "subPath" not in mount, mount
    assert token_file == mount["mountPath"] + "/token", (token_file, mount)
    assert r.all("ConfigMap") == []
    validate_k8s(r)


@test
def store_renders_etcd_flags_and_a_tls_secret_directory() -> None:
    r = render(with_values(None, **{"store.enabled": True,
                                    "store.endpoints": ["https://a:2379", "https://b:2379"],
                                    "store.prefix": "/p/",
                                    "store.tls": {"secretName": "etcd-client",
                                                  "clientCert": True}}))
    args = args_of(r)
    assert flag(args, "--etcd-endpoints") == "https://a:2379,https://b:2379", args
    assert flag(args, "--etcd-prefix") == "/p/", args
    mount = mounts(r)["etcd-tls"]
    assert "subPath" not in mount, mount
    assert flag(args, "--etcd-ca") == mount["mountPath"] + "/ca.crt", args
    assert flag(args, "--etcd-cert") == mount["mountPath"] + "/tls.crt", args
    assert flag(args, "--etcd-key") == mount["mountPath"] + "/tls.key", args
    assert volume(r, "etcd-tls")["secret"]["secretName"] == "etcd-client"
    # The policy files are still served, with the store.
    assert flag(args, "--policy") == POLICY_DIR, args
    validate_k8s(r)
    off = args_of(render(None))
    assert "--etcd-endpoints" not in off, off
    render_fails(with_values(None, **{"store.enabled": True}), "store.endpoints")
    schema_rejects(with_values(None, **{"store.endpoints": ["etcd:2379"]}))


@test
def store_auth_reads_the_password_from_a_secret_file() -> None:
    r = render(with_values(None, **{"store.enabled": True,
                                    "store.endpoints": ["http://etcd:2379"],
                                    "store.auth": {"username": "iot-authz",
                                                   "existingSecret": "etcd-password",
                                                   "passwordKey": "pw"}}))
    args = args_of(r)
    assert flag(args, "--etcd-username") == "iot-authz", args
    password_file = flag(args, "--etcd-password-file")
    mount = mounts(r)["etcd-auth"]
    assert "subPath" not in mount, mount
    assert password_file == mount["mountPath"] + "/password", (password_file, mount)
    vol = volume(r, "etcd-auth")
    assert vol["secret"]["secretName"] == "etcd-password", vol
    assert vol["secret"]["items"] == [{"key": "pw", "path": "password"}], vol
    # The password itself is never an argument or an environment value.
    assert "--etcd-password" not in args and not any(a.startswith("--etcd-password=") for a in args), args
    env = r.container().get("env", [])
    assert not any("PASSWORD" in e.get("name", "") for e in env), env
    validate_k8s(r)
    plain = args_of(render(with_values(None, **{"store.enabled": True,
                                                "store.endpoints": ["http://etcd:2379"]})))
    assert "--etcd-username" not in plain and "--etcd-password-file" not in plain, plain
    render_fails(with_values(None, **{"store.enabled": True,
                                      "store.endpoints": ["http://etcd:2379"],
                                      "store.auth.username": "iot-authz"}),
                 "store.auth.existingSecret")
    schema_rejects(with_values(None, **{"store.auth": {"user": "x"}}))


@test
def existing_configmap_is_mounted_not_rendered() -> None:
    r = render(with_values(None, **{"policy.existingConfigMap": "my-policy"}))
    assert r.all("ConfigMap") == [], r.kinds()
    vol = volume(r, "policy")
    assert vol["configMap"]["name"] == "my-policy", vol
    assert mounts(r)["policy"]["mountPath"] == flag(args_of(r), "--policy") == POLICY_DIR
    assert "subPath" not in mounts(r)["policy"]


@test
def demo_only_when_asked_and_alone() -> None:
    r = render({"demo": True})
    args = args_of(r)
    assert "--policy" not in args and "--policy-url" not in args, args
    assert r.all("ConfigMap") == [] and configmap_volumes(r) == [], r.kinds()
    assert "x-iotauthz-principal" in r.notes and "DEMO" in r.notes, r.notes
    render_fails(with_values(None, demo=True, **{"policy.documents": {"a.yaml": "version: 1\n"}}),
                 "demo: true")
    render_fails(with_values(None, demo=True, **{"bundle.url": "https://x.example/p.yaml"}),
                 "demo: true")


@test
def only_one_policy_source() -> None:
    render_fails(with_values(None, **{"policy.documents": {"a.yaml": "version: 1\n"},
                                      "bundle.url": "https://x.example/p.yaml"}),
                 "only one policy source")
    render_fails(with_values(None, **{"policy.existingConfigMap": "mine",
                                      "policy.documents": {"a.yaml": "version: 1\n"}}),
                 "only one policy source")
    render_fails(with_values(None, **{"bundle.tokenSecret.name": "t"}), "needs bundle.url")


@test
def misspelt_values_fail_the_schema() -> None:
    schema_rejects({"replicaCont": 3}, "replicaCont")
    schema_rejects({"policy": {"document": {"a.yaml": "version: 1\n"}}}, "document")
    schema_rejects({"networkPolicy": {"enable": True}}, "enable")
    schema_rejects({"image": {"pullPolicy": "Sometimes"}})
    schema_rejects({"server": {"logFormat": "xml"}})
    schema_rejects({"decisionCache": {"size": -1}})
    schema_rejects({"bundle": {"url": "ftp://example.com/policy"}})
    # iot-authz reads only *.yaml, *.yml and *.json from the directory, and skips dot files.
    schema_rejects({"policy": {"documents": {"policy.txt": "version: 1\n"}}})
    schema_rejects({"policy": {"documents": {".hidden.yaml": "version: 1\n"}}})


@test
def the_all_on_values_pass_the_schema() -> None:
    chart().validate_schema(chart().merge_values(all_on_values()))
    chart().validate_schema(chart().merge_values({}))


@test
def optional_objects_render_only_when_enabled() -> None:
    base = {"podDisruptionBudget": {"enabled": False}}
    assert render(base).kinds() == sorted(
        ["ConfigMap", "Deployment", "Service", "ServiceAccount"]), render(base).kinds()
    toggles = {
        "autoscaling.enabled": "HorizontalPodAutoscaler",
        "podDisruptionBudget.enabled": "PodDisruptionBudget",
        "serviceMonitor.enabled": "ServiceMonitor",
        "networkPolicy.enabled": "NetworkPolicy",
    }
    for path, kind in toggles.items():
        r = render(with_values(base, **{path: True}))
        assert r.kinds().count(kind) == 1, (path, r.kinds())
        others = set(toggles.values()) - {kind}
        assert not others & set(r.kinds()), (path, r.kinds())
        validate_k8s(r)
    all_off = with_values(all_on_values(), **{p: False for p in toggles})
    assert not set(toggles.values()) & set(render(all_off).kinds())


@test
def autoscaler_owns_the_replica_count() -> None:
    assert render().one("Deployment")["spec"]["replicas"] == 2
    r = render(all_on_values())
    assert "replicas" not in r.one("Deployment")["spec"], r.one("Deployment")["spec"]
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2", hpa
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "name": r.one("Deployment")["metadata"]["name"]}, hpa
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12), hpa
    names = sorted(m["resource"]["name"] for m in hpa["spec"]["metrics"])
    assert names == ["cpu", "memory"], hpa


@test
def pdb_selects_the_pods() -> None:
    r = render()
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"], pdb
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spec = render(all_on_values()).one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec, spec
    spec = render({"podDisruptionBudget": {"maxUnavailable": "25%"}}).one(
        "PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == "25%", spec
    render_fails({"podDisruptionBudget": {"maxUnavailable": None}}, "minAvailable or maxUnavailable")


@test
def service_ports_and_app_protocol() -> None:
    r = render()
    svc = r.one("Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == 50051 and ports["grpc"]["appProtocol"] == "grpc", ports
    assert ports["grpc"]["targetPort"] == "grpc", ports
    assert ports["http"]["port"] == 8181 and ports["http"]["targetPort"] == "http", ports
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["spec"]["selector"]


@test
def service_monitor_scrapes_metrics_on_http() -> None:
    r = render(all_on_values())
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm
    assert sm["metadata"]["namespace"] == "monitoring", sm["metadata"]
    assert sm["metadata"]["labels"]["release"] == "prometheus", sm["metadata"]
    spec = sm["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "endpoints"}, spec
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, spec
    svc = r.one("Service")
    assert spec["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics", endpoint
    assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "5s", endpoint
    assert "http" in {p["name"] for p in svc["spec"]["ports"]}


@test
def network_policy_admits_the_configured_callers() -> None:
    r = render(all_on_values())
    np = r.one("NetworkPolicy")
    spec = np["spec"]
    assert spec["policyTypes"] == ["Ingress"], spec
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    grpc_rule, http_rule, extra = spec["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}], grpc_rule
    (peer,) = grpc_rule["from"]
    assert peer["podSelector"] == {"matchLabels": {"iot-authz.io/client": "true"}}, peer
    assert peer["namespaceSelector"]["matchExpressions"][0]["key"] == "istio-injection"
    assert http_rule["ports"] == [{"port": "http", "protocol": "TCP"}], http_rule
    (peer,) = http_rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}, peer
    assert extra["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "istio-system"}, extra
    # namespaceSelector null: callers from the release namespace only.
    r = render(with_values(None, **{"networkPolicy.enabled": True,
                                    "networkPolicy.grpc.namespaceSelector": None}))
    (peer,) = r.one("NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert "namespaceSelector" not in peer, peer
    validate_k8s(r)


@test
def decision_cache_and_server_flags() -> None:
    args = args_of(render(all_on_values()))
    expected = {
        "--decision-cache-size": "10000", "--decision-cache-ttl-seconds": "30",
        "--policy-poll-seconds": "15", "--policy-debounce-ms": "250",
        "--max-policy-bytes": "8388608", "--max-message-bytes": "1048576",
        "--request-timeout-ms": "2000", "--concurrency-per-connection": "256",
        "--max-concurrent-streams": "256", "--max-concurrent-queries": "2",
    }
    for name, value in expected.items():
        assert flag(args, name) == value, (name, args)
    assert flag(args, "--decision-log") == "-", args
    assert flag(args, "--decision-log-sample") == "0.25", args
    assert "--shadow" not in args, args
    args = args_of(render({"decisionCache": {"size": 5000}}))
    assert flag(args, "--decision-cache-size") == "5000", args
    assert flag(args, "--decision-cache-ttl-seconds") == "60", args
    assert flag(args, "--max-message-bytes") is None, args
    # The decision log is on by default, to stdout, so a deny body's decisionId can be
    # found in the pod's log.
    assert flag(args, "--decision-log") == "-" and "--shadow" not in args, args
    assert "Decision log: one JSON line per decision" in render().notes
    r = render({"decisionLog": {"enabled": False}})
    assert "--decision-log" not in args_of(r), args_of(r)
    assert "Decision log" not in r.notes, r.notes
    args = args_of(render({"extraArgs": ["--no-watch"], "server": {"logFormat": "text"}}))
    assert args[-1] == "--no-watch" and flag(args, "--log-format") == "text", args


@test
def shadow_mode_is_explicit_and_loud() -> None:
    r = render({"shadow": True, "decisionLog": {"enabled": True}})
    args = args_of(r)
    assert "--shadow" in args and flag(args, "--decision-log") == "-", args
    assert flag(args, "--decision-log-sample") == "1", args
    assert "SHADOW MODE" in r.notes, r.notes
    assert "SHADOW" not in render().notes
    schema_rejects({"decisionLog": {"sample": 2}})
    schema_rejects({"shadow": "yes"})


@test
def checksum_annotation_is_opt_in() -> None:
    annotations = render().one("Deployment")["spec"]["template"]["metadata"].get(
        "annotations", {})
    assert "checksum/policy" not in annotations, annotations
    values = all_on_values()
    first = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(first["checksum/policy"]) == 64, first
    assert first["example.com/scrape"] == "true", first
    values["policy"]["documents"]["20-more.yaml"] = "version: 1\n"
    second = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert first["checksum/policy"] != second["checksum/policy"]
    # Nothing to checksum for a ConfigMap the chart does not render.
    r = render({"policy": {"existingConfigMap": "mine", "checksumAnnotation": True}})
    assert "annotations" not in r.one("Deployment")["spec"]["template"]["metadata"]


@test
def scheduling_env_and_image_values_pass_through() -> None:
    values = all_on_values()
    r = render(values)
    pod, c = r.pod_spec(), r.container()
    assert pod["nodeSelector"] == values["nodeSelector"], pod
    assert pod["tolerations"] == values["tolerations"], pod
    assert pod["affinity"] == values["affinity"], pod
    assert pod["topologySpreadConstraints"] == values["topologySpreadConstraints"], pod
    assert pod["imagePullSecrets"] == values["imagePullSecrets"], pod
    assert pod["priorityClassName"] == "system-cluster-critical", pod
    assert pod["terminationGracePeriodSeconds"] == 45, pod
    assert c["image"] == "registry.example.com/platform/iot-authz:0.1.0", c["image"]
    assert c["imagePullPolicy"] == "Always", c
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"RUST_LOG": "info", "TZ": "UTC"}, env
    assert c["envFrom"] == values["envFrom"], c
    assert mounts(r)["extra"]["mountPath"] == "/var/lib/iot-authz-extra"
    labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["iot-authz.io/tier"] == "authz", labels
    default = render().container()
    assert default["image"] == "iot-authz:" + chart().metadata["appVersion"], default["image"]
    assert "env" not in default, default


@test
def tls_swaps_the_grpc_startup_probe() -> None:
    r = render({"tls": {"enabled": True, "secretName": "iot-authz-tls",
                        "requireClientCert": True}})
    c = r.container()
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, c
    assert "grpc" not in c["startupProbe"], c
    args = args_of(r)
    tls_dir = mounts(r)["tls"]["mountPath"]
    assert flag(args, "--tls-cert") == tls_dir + "/tls.crt", args
    assert flag(args, "--tls-key") == tls_dir + "/tls.key", args
    assert flag(args, "--tls-client-ca") == tls_dir + "/ca.crt", args
    assert volume(r, "tls")["secret"]["secretName"] == "iot-authz-tls"
    # The NOTES' grpcurl line speaks TLS when the server does.
    assert "-plaintext" not in r.notes, r.notes
    assert "grpcurl -cacert ca.crt -cert tls.crt -key tls.key" in r.notes, r.notes
    assert "grpcurl -plaintext" in render().notes
    validate_k8s(r)
    render_fails({"tls": {"enabled": True}}, "tls.secretName")


@test
def notes_print_the_istio_and_envoy_wiring() -> None:
    r = render(name="authz", namespace="prod")
    host = "authz-iot-authz.prod.svc.cluster.local"
    assert r.one("Service")["metadata"]["name"] == "authz-iot-authz"
    notes = r.notes
    for text in ("extensionProviders:", "- name: iot-authz", "envoyExtAuthzGrpc:",
                 f"service: {host}", "port: 50051", "failOpen: false",
                 "action: CUSTOM", "envoy.filters.http.ext_authz",
                 "envoy_grpc: {cluster_name: iot_authz}", "failure_mode_allow: false",
                 "http2_protocol_options: {}",
                 f"socket_address: {{address: {host}, port_value: 50051}}"):
        assert text in notes, f"NOTES.txt lacks {text!r}:\n{notes}"
    # Istio's gRPC provider has no header allowlist; the NOTES must not suggest one.
    assert "includeRequestHeadersInCheck" not in notes
    # The default release name gives the name the Istio examples in deploy/istio use.
    assert "service: iot-authz.iot-authz.svc.cluster.local" in render().notes


@test
def istio_examples_use_real_field_names() -> None:
    mesh = yaml.safe_load((ISTIO / "mesh-config.yaml").read_text())
    providers = mesh["spec"]["meshConfig"]["extensionProviders"]
    (provider,) = [p for p in providers if p["name"] == "iot-authz"]
    grpc = provider["envoyExtAuthzGrpc"]
    # The fields of MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider.
    allowed = {"service", "port", "timeout", "failOpen", "statusOnError",
               "includeRequestBodyInCheck"}
    assert set(grpc) <= allowed, set(grpc) - allowed
    assert grpc["service"] == "iot-authz.iot-authz.svc.cluster.local", grpc
    assert grpc["port"] == 50051 and grpc["failOpen"] is False, grpc
    policies = [d for d in yaml.safe_load_all((ISTIO / "authorization-policy.yaml").read_text())
                if d]
    custom = [p for p in policies if p["spec"].get("action") == "CUSTOM"]
    assert custom, policies
    for p in policies:
        assert p["apiVersion"] == "security.istio.io/v1", p
        assert p["kind"] == "AuthorizationPolicy", p
    for p in custom:
        assert p["spec"]["provider"] == {"name": "iot-authz"}, p
        assert p["spec"]["selector"]["matchLabels"], p
        assert p["spec"]["rules"], p


@test
def dockerfile_runs_the_binary_as_nonroot() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in ("FROM rust:1.95.0-slim-bookworm AS chef",
                 "RUN cargo chef cook --release --locked",
                 "RUN cargo build --release --locked",
                 "FROM gcr.io/distroless/cc-debian12:nonroot",
                 "USER 65532:65532", "EXPOSE 50051 8181",
                 'ENTRYPOINT ["/usr/local/bin/iot-authz"]', 'CMD ["serve"]'):
        assert any(l.strip().startswith(line) for l in text.splitlines()), line
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("target/", ".venv/", "fuzz/target/"):
        assert pattern in ignored, ignored


def main() -> int:
    passed = failed = 0
    print(f"helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}, "
          f"Kubernetes schemas {', '.join(K8S_VERSIONS)}")
    for fn in TESTS:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {fn.__name__}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
