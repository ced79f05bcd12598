"""Rendering the chart with the pinned helm, and the order in which Helm would create what it
renders: a dry run of `helm install` / `helm upgrade` without a cluster.

Helm's order (helm v3.22, pkg/action/hooks.go and pkg/releaseutil/kind_sorter.go): the hooks of
a phase (pre-install, or pre-upgrade) one after the other, sorted by hook weight, then by name
(a stable sort over hooks already sorted by kind in InstallOrder), each created and waited for
(a Job until it completes); then the release's regular objects in InstallOrder by kind. So an
object a hook needs must come from an earlier hook of the same phase, or exist before Helm runs.

    .venv/bin/python -m tests.deploy.helm [--phase pre-upgrade] [--release NAME] [--set K=V ...]

prints that order for the given values.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "packline"
KUBERNETES_VERSION = "1.33.0"

HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"
HOOK_DELETE_POLICY = "helm.sh/hook-delete-policy"

# helm v3.22 pkg/releaseutil/kind_sorter.go, InstallOrder (kinds not in it come last, by name).
INSTALL_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]


def deploy_tools() -> Path:
    """Where helm, kubeconform and promtool are, at their pinned versions
    (deploy/tools/install.sh builds them once into the cache)."""
    done = subprocess.run(
        [str(ROOT / "deploy" / "tools" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def helm_binary() -> Path:
    return deploy_tools() / "helm"


def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, input=stdin, timeout=300
    )


def render(
    helm: Path, *values: str, release: str = "packline", hooks: bool = True
) -> list[dict[str, Any]]:
    """`helm template` of the chart, as a list of objects."""
    sets = [item for value in values for item in ("--set", value)]
    done = run(
        helm,
        "template",
        release,
        CHART,
        "--kube-version",
        KUBERNETES_VERSION,
        *([] if hooks else ["--no-hooks"]),
        *sets,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


Ref = tuple[str, str]  # (kind, name)


def ref(doc: dict[str, Any]) -> Ref:
    return doc["kind"], doc["metadata"]["name"]


def hook_events(doc: dict[str, Any]) -> set[str]:
    annotations = doc["metadata"].get("annotations") or {}
    return {event.strip() for event in annotations.get(HOOK, "").split(",") if event.strip()}


def hook_weight(doc: dict[str, Any]) -> int:
    return int((doc["metadata"].get("annotations") or {}).get(HOOK_WEIGHT, "0"))


def delete_policies(doc: dict[str, Any]) -> set[str]:
    annotations = doc["metadata"].get("annotations") or {}
    policies = annotations.get(HOOK_DELETE_POLICY, "before-hook-creation")
    return {policy.strip() for policy in policies.split(",")}


def kind_rank(kind: str) -> tuple[int, str]:
    return (INSTALL_ORDER.index(kind), "") if kind in INSTALL_ORDER else (len(INSTALL_ORDER), kind)


@dataclass(frozen=True)
class Step:
    """One object Helm creates: by the hook phase (and its weight), or as a regular object."""

    kind: str
    name: str
    phase: str | None  # the hook phase, None for the release's regular objects
    weight: int
    doc: dict[str, Any]

    def __str__(self) -> str:
        when = f"{self.phase} hook, weight {self.weight}" if self.phase else "release object"
        return f"{self.kind}/{self.name} ({when})"


def install_order(manifests: list[dict[str, Any]], phase: str = "pre-install") -> list[Step]:
    """What Helm creates for `helm install` (phase pre-install) or `helm upgrade` (pre-upgrade),
    in order: that phase's hooks, then the regular objects."""
    hooks = [doc for doc in manifests if phase in hook_events(doc)]
    hooks.sort(key=lambda doc: (hook_weight(doc), doc["metadata"]["name"], kind_rank(doc["kind"])))
    regular = [doc for doc in manifests if not hook_events(doc)]
    regular.sort(key=lambda doc: (kind_rank(doc["kind"]), doc["metadata"]["name"]))
    return [
        Step(doc["kind"], doc["metadata"]["name"], phase, hook_weight(doc), doc) for doc in hooks
    ] + [Step(doc["kind"], doc["metadata"]["name"], None, 0, doc) for doc in regular]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (or the spec of a Pod)."""
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    template = (doc.get("spec") or {}).get("template")
    return dict(template["spec"]) if template else None


def pod_references(spec: dict[str, Any]) -> Iterator[Ref]:
    """Every ConfigMap, Secret and ServiceAccount a pod needs before its containers can start."""
    if spec.get("serviceAccountName"):
        yield "ServiceAccount", spec["serviceAccountName"]
    for secret in spec.get("imagePullSecrets") or []:
        yield "Secret", secret["name"]
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                yield "ConfigMap", source["configMap"]["name"]
            if "secret" in source:
                yield "Secret", source["secret"]["name"]
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for entry in container.get("env") or []:
            value_from = entry.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                yield "ConfigMap", value_from["configMapKeyRef"]["name"]
            if "secretKeyRef" in value_from:
                yield "Secret", value_from["secretKeyRef"]["name"]


def references(doc: dict[str, Any]) -> set[Ref]:
    """The namespaced objects an object needs to exist: its pods' configuration, and KEDA's."""
    found: set[Ref] = set()
    spec = pod_spec(doc)
    if spec is not None:
        found |= set(pod_references(spec))
    if doc["kind"] == "TriggerAuthentication":
        found |= {("Secret", item["name"]) for item in doc["spec"].get("secretTargetRef") or []}
    if doc["kind"] == "ScaledObject":
        found.add(("Deployment", doc["spec"]["scaleTargetRef"]["name"]))
        for trigger in doc["spec"]["triggers"]:
            if trigger.get("authenticationRef"):
                found.add(("TriggerAuthentication", trigger["authenticationRef"]["name"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["pre-install", "pre-upgrade"], default="pre-install")
    parser.add_argument("--release", default="packline")
    parser.add_argument("--set", action="append", default=[], dest="values", metavar="KEY=VALUE")
    args = parser.parse_args()
    steps = install_order(render(helm_binary(), *args.values, release=args.release), args.phase)
    for number, step in enumerate(steps, 1):
        policy = ""
        if step.phase:
            policy = f", deleted: {','.join(sorted(delete_policies(step.doc)))}"
        needs = ", ".join(f"{kind}/{name}" for kind, name in sorted(references(step.doc)))
        print(f"{number:2}. {step}{policy}" + (f"  <- needs {needs}" if needs else ""))


if __name__ == "__main__":
    main()
