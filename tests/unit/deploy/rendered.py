"""Helpers of the Kubernetes manifest tests: every overlay of k8s/overlays as ``kubectl
kustomize`` renders it, and what the code declares to check it against."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.tiers import QUALITY_TIERS, ROUTER_QUEUE, Tier

Doc = dict[str, Any]

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
ALERTS = ROOT / "grafana" / "prometheus" / "alerts.yml"
OVERLAYS = sorted(
    path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").is_file()
)
# The overlays of an environment of their own (its project, registry and tag), as opposed to
# one that re-renders another with a component added (prod-prometheus-operator).
ENVIRONMENTS = [
    name for name in OVERLAYS if (K8S / "overlays" / name / "environment.yaml").exists()
]

# The queues every deployment serves. The `local` tier is the one exclusion, and the code itself
# names it optional: it "exists only where the local tier is turned on" (Tier's docstring) and
# needs a model server beside its workers, which a cluster brings itself (k8s/README.md, "A
# local tier"). QUALITY_TIERS is the code's list of the tiers every deployment has.
OPTIONAL_TIERS = {Tier.LOCAL}
QUEUES = [ROUTER_QUEUE, *(tier.queue for tier in QUALITY_TIERS)]

ROLLOUT_API = "argoproj.io/v1alpha1"
AUTOSCALER_LIMIT_S = 600  # the cluster autoscaler's max-graceful-termination-sec
GMP_QUERY_API = re.compile(
    r"^https://monitoring\.googleapis\.com/v1/projects/[a-z][-a-z0-9]{4,28}[a-z0-9]"
    r"/location/global/prometheus$"
)
PLACEHOLDERS = ("PROJECT_ID", "GATEWAY_HOST", "GATEWAY_STATIC_IP", "REDIS_CIDR")
MONITORING_NAMESPACES = {"gmp-system", "gke-gmp-system", "monitoring"}
ALERT_JOBS = {"chordal-workers", "chordal-exporter"}
CHORDAL_METRIC = re.compile(r"\bchordal_[a-z0-9_]+")

# Which Secrets each role's pods may read; serviceaccounts.yaml says the same in prose.
BROKER, PRODUCER, REDIS_CA = "chordal-broker-worker", "chordal-broker-producer", "chordal-redis-ca"
PROVIDER_KEYS = "chordal-provider-keys"
SECRETS_BY_ROLE = {
    "router": {BROKER, REDIS_CA},
    "worker": {BROKER, REDIS_CA, PROVIDER_KEYS},
    "gateway": {PRODUCER, REDIS_CA, "chordal-gateway-keys"},
    "flower": {BROKER, REDIS_CA, "chordal-flower"},
    "exporter": {BROKER, REDIS_CA},
    "gmp-frontend": set(),
}


@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> tuple[Doc, ...]:
    """Every object of ``overlay``, as ``kubectl kustomize`` renders it."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: it renders the overlays (kubectl kustomize)")
    return _render(overlay)


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    """Every object with a pod template."""
    return [doc for doc in docs if doc["kind"] in {"Rollout", "Deployment"}]


def role(workload: Doc) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def consumed_queue(container: Doc) -> str | None:
    """The queue a container's ``chordal worker`` command consumes (chordal/cli/stack.py)."""
    args = container.get("args", [])
    if args[:1] != ["worker"]:
        return None
    if "--router" in args:
        return ROUTER_QUEUE
    return Tier(args[args.index("--tier") + 1]).queue


def rollout_for(docs: tuple[Doc, ...], queue: str) -> Doc:
    found = [
        rollout
        for rollout in of_kind(docs, "Rollout")
        for container in containers(rollout)
        if consumed_queue(container) == queue
    ]
    assert len(found) == 1, f"expected one Rollout consuming {queue}, found {len(found)}"
    return found[0]


def pool(queue: str) -> str:
    """The pool (chordal/pool label, Rollout name) the code's queue name implies."""
    return "router" if queue == ROUTER_QUEUE else Tier(queue.removeprefix("tier.")).value


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def template_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def secret_refs(workload: Doc) -> Iterator[tuple[str, str | None]]:
    """(Secret, key or None for the whole Secret) for everything a pod template reads."""
    spec = workload["spec"]["template"]["spec"]
    for container in spec["containers"] + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield source["secretRef"]["name"], None
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]
    for volume in spec.get("volumes", []):
        sources = (
            [volume["secret"] | {"name": volume["secret"]["secretName"]}]
            if "secret" in volume
            else []
        )
        sources += [
            source["secret"]
            for source in volume.get("projected", {}).get("sources", [])
            if "secret" in source
        ]
        for source in sources:
            items = source.get("items") or [{"key": None}]
            for item in items:
                yield source["name"], item["key"]


def env_names(workload: Doc) -> set[str]:
    return {variable["name"] for c in containers(workload) for variable in c.get("env", [])}


def effective_setting(docs: tuple[Doc, ...], workload: Doc, name: str) -> str:
    """A CHORDAL_* value as the container sees it: its own env, else the ConfigMap's."""
    for container in containers(workload):
        for variable in container.get("env", []):
            if variable["name"] == name and "value" in variable:
                return str(variable["value"])
    return str(find(docs, "ConfigMap", "chordal-config")["data"][name])


def alert_groups() -> list[Doc]:
    groups: list[Doc] = yaml.safe_load(ALERTS.read_text())["groups"]
    return groups
