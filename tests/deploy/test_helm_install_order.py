"""The chart installs on an empty namespace and upgrades: a dry run of Helm's order (tests/deploy/
helm.py) shows every object a hook Job needs created by an earlier hook of the same phase, or
made outside the chart before the install, never by the release's regular objects, which Helm
creates only after the pre-install hooks. The ACL Job's command, expanded as Kubernetes would,
creates the registry's ACLs for the Secret's users. And two releases share a namespace without a
clash."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from packline_contracts.topics import SERVICES
from packline_core.acls import PRINCIPAL_KINDS, acls, user_name
from packline_core.admin import _pairs, _parser

from tests.deploy.helm import (
    CHART,
    KUBERNETES_VERSION,
    Ref,
    delete_policies,
    helm_binary,
    hook_events,
    install_order,
    pod_spec,
    ref,
    references,
    render,
    run,
)

pytestmark = pytest.mark.timeout(1800)  # the first test may build helm (minutes, once)

SECRET_VALUES = [
    f"secrets.values.{key}=test-only"
    for key in (
        "staff-tokens",
        "calendar-token",
        "calendar-database-url",
        "invoicing-database-url",
        "matcher-database-url",
        "kafka-sasl-username",
        "kafka-sasl-password",
        *(
            f"{service}-kafka-sasl-{part}"
            for service in SERVICES
            for part in ("username", "password")
        ),
        "kafka-sasl-mechanism",
        "kafka-tls",
    )
]

# (values, objects the operator makes before installing: docs/operations.md, section 3)
CASES: dict[str, tuple[tuple[str, ...], set[Ref]]] = {
    "production": ((), {("Secret", "packline-secrets")}),
    "test-cluster-secret-from-values": (
        ("secrets.create=true", *SECRET_VALUES),
        set(),
    ),
    "tls-ca-and-prefix": (
        ("kafka.securityProtocol=SSL", "kafka.caConfigMap=kafka-ca", "topicPrefix=clinic-a."),
        {("Secret", "packline-secrets"), ("ConfigMap", "kafka-ca")},
    ),
    "acls-managed-elsewhere": (("kafka.acls.create=false",), {("Secret", "packline-secrets")}),
    "acls-and-users-with-a-ca": (
        (
            "kafka.acls.createUsers=true",
            "kafka.acls.users.staff-front-end=clinic-a-front-end",
            "kafka.caConfigMap=kafka-ca",
        ),
        {("Secret", "packline-secrets"), ("ConfigMap", "kafka-ca")},
    ),
}
# The cases whose hooks create the ACLs (SASL_*, kafka.acls.create left on).
ACL_JOB_CASES = {"production", "test-cluster-secret-from-values", "acls-and-users-with-a-ca"}
PHASES = ["pre-install", "pre-upgrade"]


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def keys_of(doc: dict[str, Any]) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def key_references(spec: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(kind, name, key) of every single key a pod's containers read."""
    found = set()
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for entry in container.get("env") or []:
            value_from = entry.get("valueFrom") or {}
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from:
                    found.add((kind, value_from[field]["name"], value_from[field]["key"]))
    return found


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_hook_finds_what_it_needs_already_made(helm: Path, case: str, phase: str) -> None:
    values, outside = CASES[case]
    manifests = render(helm, *values)
    rendered = {ref(doc): doc for doc in manifests}
    steps = install_order(manifests, phase)
    hooks = [step for step in steps if step.phase]
    assert [step.name for step in hooks if step.kind == "Job"] == [
        "packline-create-topics",
        *(["packline-kafka-acls"] if case in ACL_JOB_CASES else []),
        "packline-calendar-migrate",
        "packline-invoicing-migrate",
        "packline-matcher-migrate",
    ]
    for position, step in enumerate(hooks):
        made_before = {
            (earlier.kind, earlier.name): earlier
            for earlier in hooks[:position]
            if earlier.weight < step.weight
        }
        for needed in sorted(references(step.doc)):
            if needed in outside:
                # Made by the operator beforehand; the chart must not make it too (Helm would
                # then create it after the hooks, or refuse to adopt the existing one).
                assert needed not in rendered, f"{step} needs {needed}, which the chart renders"
                continue
            assert needed in made_before, (
                f"{phase}: {step} needs {needed[0]}/{needed[1]}, which no earlier hook of "
                f"{phase} with a lower weight creates (a release object comes after the hooks)"
            )
            # Kept until the whole phase has succeeded (Helm deletes hook-succeeded hooks only
            # after the last hook of the phase), so a later Job still finds it.
            assert delete_policies(made_before[needed].doc) <= {
                "before-hook-creation",
                "hook-succeeded",
                "hook-failed",
            }
        spec = pod_spec(step.doc)
        for kind, name, key in key_references(spec) if spec else ():
            if (kind, name) in made_before:
                assert key in keys_of(made_before[kind, name].doc), f"{step}: no {key} in {name}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_release_objects_need_only_release_objects_or_the_operators(helm: Path, case: str) -> None:
    """Hook copies are deleted after their phase, so a Deployment must never read one."""
    values, outside = CASES[case]
    manifests = render(helm, *values)
    regular = {ref(doc) for doc in manifests if not hook_events(doc)}
    for doc in manifests:
        if not hook_events(doc):
            for needed in references(doc):
                assert needed in regular or needed in outside, f"{ref(doc)} needs {needed}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_itself_agrees_which_objects_are_hooks(helm: Path, case: str) -> None:
    values, _ = CASES[case]
    everything = render(helm, *values)
    assert {ref(doc) for doc in render(helm, *values, hooks=False)} == {
        ref(doc) for doc in everything if not hook_events(doc)
    }


def test_the_hooks_copies_hold_what_the_release_objects_hold(helm: Path) -> None:
    manifests = {
        ref(doc): doc for doc in render(helm, *CASES["test-cluster-secret-from-values"][0])
    }
    assert (
        manifests["ConfigMap", "packline-hook-config"]["data"]
        == manifests["ConfigMap", "packline-config"]["data"]
    )
    assert (
        manifests["Secret", "packline-hook-secrets"]["stringData"]
        == manifests["Secret", "packline-secrets"]["stringData"]
    )
    for name in ("packline-hook-config", "packline-hook-secrets"):
        hook = manifests["ConfigMap" if "config" in name else "Secret", name]
        assert hook_events(hook) == {"pre-install", "pre-upgrade"}


def test_a_first_install_creates_objects_in_this_order(helm: Path) -> None:
    """The order the README and docs/kubernetes.md describe."""
    steps = install_order(render(helm, *CASES["test-cluster-secret-from-values"][0]))
    assert [str(step) for step in steps if step.phase] == [
        "ConfigMap/packline-hook-config (pre-install hook, weight -20)",
        "Secret/packline-hook-secrets (pre-install hook, weight -20)",
        "Job/packline-create-topics (pre-install hook, weight -10)",
        "Job/packline-kafka-acls (pre-install hook, weight -8)",
        "Job/packline-calendar-migrate (pre-install hook, weight -5)",
        "Job/packline-invoicing-migrate (pre-install hook, weight -5)",
        "Job/packline-matcher-migrate (pre-install hook, weight -5)",
    ]
    regular = [(step.kind, step.name) for step in steps if not step.phase]
    assert regular.index(("ConfigMap", "packline-config")) < regular.index(
        ("Deployment", "packline-calendar")
    )


# --- the ACL Job ------------------------------------------------------------------------------

# A test cluster whose services' SCRAM users are named as the cluster likes, not packline-<kind>.
NAMED_USERS = (
    "secrets.create=true",
    *SECRET_VALUES,
    *(f"secrets.values.{service}-kafka-sasl-username=clinic-a-{service}" for service in SERVICES),
    *(f"secrets.values.{service}-kafka-sasl-password=pw-{service}" for service in SERVICES),
    "kafka.acls.users.payments=clinic-a-payments",
    "topicPrefix=clinic-a.",
)


def expanded_command(
    job: dict[str, Any], manifests: list[dict[str, Any]]
) -> tuple[list[str], dict[str, str]]:
    """The Job's command line and environment as the kubelet starts it: each secretKeyRef read
    from the rendered Secret, each ``$(VAR)`` in the arguments replaced by the variable."""
    secrets = {
        doc["metadata"]["name"]: doc.get("stringData") or {}
        for doc in manifests
        if doc["kind"] == "Secret"
    }
    configs = {
        doc["metadata"]["name"]: doc.get("data") or {}
        for doc in manifests
        if doc["kind"] == "ConfigMap"
    }
    (container,) = pod_spec(job)["containers"]  # type: ignore[index]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env |= configs[source["configMapRef"]["name"]]
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref_ = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref_["name"]][ref_["key"]]
    words = [*container["command"], *container.get("args", [])]
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], word) for word in words]
    return expanded, env


def acl_job(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [doc for doc in manifests if ref(doc) == ("Job", "packline-kafka-acls")]
    return job


@pytest.mark.parametrize("create_users", [False, True])
def test_the_acl_job_grants_the_registrys_acls_to_the_secrets_users(
    helm: Path, create_users: bool
) -> None:
    manifests = render(helm, *NAMED_USERS, f"kafka.acls.createUsers={create_users}")
    command, env = expanded_command(acl_job(manifests), manifests)
    assert command[:2] == ["packline-admin", "acls"]
    args = _parser().parse_args(command[1:])
    assert args.apply and not args.remove
    users = _pairs(args.user, "--user")
    # packline-admin reads the prefix and the admin connection from the environment.
    granted = acls(env["PACKLINE_TOPIC_PREFIX"], users)
    principals = {acl.principal for acl in granted}
    expected = {
        kind: f"clinic-a-{kind}" if kind in (*SERVICES, "payments") else user_name(kind)
        for kind in PRINCIPAL_KINDS
    }
    assert principals == {f"User:{name}" for name in expected.values()}
    assert granted == sorted(acls("clinic-a.", expected))
    assert all(acl.name.startswith("clinic-a.") for acl in granted)
    assert env["PACKLINE_KAFKA_SASL_USERNAME"] == "test-only"  # the admin user, kafka-sasl-*
    passwords = _pairs(args.password_env, "--password-env")
    if create_users:
        assert set(passwords) == set(SERVICES)
        for kind, variable in passwords.items():
            assert env[variable] == f"pw-{kind}"  # <service>-kafka-sasl-password
    else:
        assert not passwords
        assert not any(name.endswith("_KAFKA_PASSWORD") for name in env)


def test_the_acl_job_reads_no_database_url_or_staff_token(helm: Path) -> None:
    manifests = render(helm, *NAMED_USERS)
    (container,) = pod_spec(acl_job(manifests))["containers"]  # type: ignore[index]
    keys = {entry["valueFrom"]["secretKeyRef"]["key"] for entry in container["env"]}
    assert keys == {"kafka-sasl-username", "kafka-sasl-password"} | {
        f"{service}-kafka-sasl-username" for service in SERVICES
    }


def test_without_service_principals_the_acl_job_keeps_the_default_names(helm: Path) -> None:
    """kafka.servicePrincipals=false: the services use the admin user; the outside producers'
    principals still get their ACLs, and the Job needs no per-service key of the Secret."""
    manifests = render(helm, *NAMED_USERS, "kafka.servicePrincipals=false")
    command, env = expanded_command(acl_job(manifests), manifests)
    users = _pairs(_parser().parse_args(command[1:]).user, "--user")
    assert users == {"payments": "clinic-a-payments"}
    assert not any(name.endswith("_KAFKA_USER") for name in env)


def test_no_acl_job_without_sasl_or_when_acls_are_managed_elsewhere(helm: Path) -> None:
    for values in (("kafka.acls.create=false",), ("kafka.securityProtocol=SSL",)):
        names = {ref(doc) for doc in render(helm, *values)}
        assert ("Job", "packline-kafka-acls") not in names, values
        assert ("Job", "packline-create-topics") in names


# --- two releases in one namespace ------------------------------------------------------------

TWO_RELEASES = ("secrets.create=true", *SECRET_VALUES)  # every kind of object the chart has


def release_manifests(helm: Path, release: str) -> list[dict[str, Any]]:
    return render(helm, *TWO_RELEASES, release=release)


def test_two_releases_render_disjoint_names(helm: Path) -> None:
    a, b = (release_manifests(helm, name) for name in ("clinic-a", "clinic-b"))
    names_a, names_b = {ref(doc) for doc in a}, {ref(doc) for doc in b}
    assert len(names_a) == len(a) and len(names_b) == len(b)  # no clash inside one either
    assert not names_a & names_b, names_a & names_b
    kinds = {kind for kind, _ in names_a}
    assert {"ConfigMap", "Secret", "Job", "Deployment", "Service", "ScaledObject"} <= kinds
    for release, manifests in (("clinic-a", a), ("clinic-b", b)):
        for doc in manifests:
            assert doc["metadata"]["name"].startswith(f"{release}-"), ref(doc)


def test_each_release_refers_only_to_its_own_objects(helm: Path) -> None:
    for release in ("clinic-a", "clinic-b"):
        manifests = release_manifests(helm, release)
        own = {ref(doc) for doc in manifests}
        for doc in manifests:
            for needed in references(doc):
                assert needed in own, f"{release}: {ref(doc)} needs {needed}"
            selector = (doc.get("spec") or {}).get("selector") or {}
            labels = selector.get("matchLabels", selector) if doc["kind"] != "Job" else {}
            if doc["kind"] in {"Deployment", "Service", "PodDisruptionBudget"}:
                assert labels["app.kubernetes.io/instance"] == release, ref(doc)
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == f"{release}-invoicing":
                (container,) = doc["spec"]["template"]["spec"]["containers"]
                env = {e["name"]: e.get("value") for e in container["env"]}
                host = urlparse(env["PACKLINE_CALENDAR_URL"]).hostname
                assert ("Service", host) in own


def test_the_release_named_packline_keeps_the_names_the_docs_use(helm: Path) -> None:
    names = {ref(doc) for doc in render(helm, "secrets.create=true", *SECRET_VALUES)}
    assert {
        ("ConfigMap", "packline-config"),
        ("Secret", "packline-secrets"),
        ("Service", "packline-calendar"),
        ("TriggerAuthentication", "packline-kafka"),
    } <= names


def test_a_release_name_too_long_for_a_job_name_is_refused(helm: Path) -> None:
    done = run(helm, "template", "x" * 46, CHART, "--kube-version", KUBERNETES_VERSION)
    assert done.returncode != 0 and "longer than 45 characters" in done.stderr
    longest = render(helm, release="x" * 45)
    assert max(len(doc["metadata"]["name"]) for doc in longest) <= 63
