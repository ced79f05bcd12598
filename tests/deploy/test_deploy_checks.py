"""deploy/ checked with the tools operators use: hadolint on the Dockerfile, helm lint and render,
kubeconform (strict) against the Kubernetes and KEDA schemas, promtool on the alert rules; and
the chart checked against the code it deploys (consumer groups, probes, secrets, metrics)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packline_contracts.topics import CONSUMERS
from packline_core.metrics import ServiceMetrics

from tests.deploy.helm import deploy_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "packline"
OBSERVABILITY = ROOT / "deploy" / "observability"
KUBERNETES_VERSION = "1.33.0"

# The first test builds the checkers when the cache has none (minutes on a new machine).
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def tools() -> Path:
    """helm, kubeconform and promtool at pinned versions (built once into the cache)."""
    return deploy_tools()


def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, input=stdin, timeout=300
    )


def render(tools: Path, *values: str) -> str:
    sets = [item for value in values for item in ("--set", value)]
    done = run(
        tools / "helm", "template", "packline", CHART, "--kube-version", KUBERNETES_VERSION, *sets
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(manifest: str) -> Iterator[dict[str, Any]]:
    yield from (doc for doc in yaml.safe_load_all(manifest) if doc)


# --- the tools --------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from requirements.lock
    done = run(hadolint, "--failure-threshold", "info", ROOT / "deploy" / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_passes_helm_lint_strict(tools: Path) -> None:
    done = run(tools / "helm", "lint", "--strict", CHART)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "values",
    [
        (),  # production defaults: SASL_SSL, KEDA, secrets created outside the chart
        ("kafka.securityProtocol=PLAINTEXT", "secrets.create=true", "autoscaling.enabled=false"),
        ("kafka.securityProtocol=SSL", "kafka.caConfigMap=kafka-ca", "topicPrefix=clinic-a."),
    ],
    ids=["production", "plaintext-test-cluster", "tls-with-prefix"],
)
def test_the_rendered_manifests_validate_strictly(tools: Path, values: tuple[str, ...]) -> None:
    schemas = tools.parent / "kubernetes-schemas" / f"v{KUBERNETES_VERSION}"
    keda = tools.parent / "keda-schemas"
    done = run(
        tools / "kubeconform",
        "-strict",
        "-summary",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        "-schema-location",
        f"{keda}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
        "-",
        stdin=render(tools, *values),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in done.stdout, done.stdout


def test_the_alert_rules_pass_promtool(tools: Path) -> None:
    done = run(tools / "promtool", "check", "rules", OBSERVABILITY / "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


# --- the chart against the code ---------------------------------------------------------------


def test_autoscaling_never_exceeds_the_partitions(tools: Path) -> None:
    done = run(
        tools / "helm",
        "template",
        "packline",
        CHART,
        "--kube-version",
        KUBERNETES_VERSION,
        "--set",
        "services.matcher.autoscaling.maxReplicas=24",
    )
    assert done.returncode != 0 and "more than kafka.partitions" in done.stderr
    for doc in documents(render(tools)):
        if doc["kind"] == "ScaledObject":
            assert doc["spec"]["maxReplicaCount"] <= 12


def test_each_service_scales_on_its_registry_consumer_groups(tools: Path) -> None:
    # The busy groups: those on the default-partitioned topics (the catalogue's topics have 3
    # partitions and little traffic; probes are a handful of messages).
    wanted = {
        f"packline.{c.service}.{c.name}"
        for c in CONSUMERS
        if c.name != "probes" and all(topic.partitions is None for topic in c.topics)
    }
    scaled = {
        trigger["metadata"]["consumerGroup"]
        for doc in documents(render(tools))
        if doc["kind"] == "ScaledObject"
        for trigger in doc["spec"]["triggers"]
    }
    assert scaled == wanted


def test_deployments_probe_the_services_and_outlast_a_batch(tools: Path) -> None:
    manifests = list(documents(render(tools)))
    deployments = [doc for doc in manifests if doc["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "packline-calendar",
        "packline-invoicing",
        "packline-matcher",
    }
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert pod["terminationGracePeriodSeconds"] > 30  # the consumer's graceful_timeout
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests}
    assert ("Job", "packline-create-topics") in kinds
    assert {("Job", f"packline-{s}-migrate") for s in ("calendar", "invoicing", "matcher")} <= kinds
    assert {("PodDisruptionBudget", f"packline-{s}") for s in ("calendar", "invoicing")} <= kinds


def test_no_secret_in_the_configmap(tools: Path) -> None:
    for doc in documents(render(tools)):
        if doc["kind"] == "ConfigMap":
            for key in doc["data"]:
                assert not re.search(r"TOKEN|PASSWORD|DATABASE_URL|USERNAME", key), key
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            for entry in container["env"]:
                if re.search(r"TOKEN|PASSWORD|DATABASE_URL", entry["name"]):
                    assert "secretKeyRef" in entry["valueFrom"], entry["name"]


def test_alerts_and_dashboard_use_only_metrics_the_services_export() -> None:
    exported = {
        family.name
        for family in ServiceMetrics().registry.collect()
        if family.name.startswith("packline_")
    }
    texts = [
        (OBSERVABILITY / "alerts.yml").read_text(),
        json.dumps(json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())),
    ]
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for text in texts
        for name in re.findall(r"packline_[a-z_]+", text)
    }
    assert used and used <= exported, used - exported
