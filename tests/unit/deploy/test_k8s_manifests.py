"""The Kubernetes manifests as Kustomize renders them: every overlay of k8s/overlays.

Each overlay is rendered with ``kubectl kustomize`` (the tests skip when kubectl is missing)
and its objects are checked against what the code declares: one Rollout per queue of
:mod:`workers.tiers`, consuming it and scaled on it, with a PodDisruptionBudget; Secrets split
by role, provider keys (:data:`workers.settings.PROVIDER_KEY_VARS`) for the tier workers alone;
the alert rules equal to grafana/prometheus/alerts.yml; grace periods the cluster autoscaler
honours; qualified images, distinct per environment. ``deploy/validate-k8s`` checks the same
output against the Kubernetes and CRD schemas.
"""

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
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chordal.exporter import QueueCollector
from workers.observability.metrics import JOB_STATES, Metrics
from workers.settings import PROVIDER_KEY_VARS, Settings
from workers.tiers import ALL_QUEUES, QUALITY_TIERS, ROUTER_QUEUE, Tier

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


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    """One overlay's objects."""
    return render(request.param)


def test_there_are_environments_and_a_prometheus_operator_overlay() -> None:
    assert {"dev", "staging", "prod"} <= set(ENVIRONMENTS)
    rendered = {name: render(name) for name in OVERLAYS}
    assert any(of_kind(objects, "PrometheusRule") for objects in rendered.values())
    assert any(of_kind(objects, "Rules") for objects in rendered.values())


def test_only_the_optional_local_tier_has_no_manifests() -> None:
    # A tier the code adds fails here until it gets manifests (or is named optional here).
    assert set(Tier) - set(QUALITY_TIERS) == OPTIONAL_TIERS
    assert set(QUEUES) | {tier.queue for tier in OPTIONAL_TIERS} == set(ALL_QUEUES)


@pytest.mark.parametrize("queue", QUEUES)
def test_each_queue_has_a_rollout_consuming_it(docs: tuple[Doc, ...], queue: str) -> None:
    rollout = rollout_for(docs, queue)
    name = "chordal-router" if queue == ROUTER_QUEUE else f"chordal-worker-{pool(queue)}"

    assert rollout["apiVersion"] == ROLLOUT_API
    assert rollout["metadata"]["name"] == name
    assert template_labels(rollout)["chordal/pool"] == pool(queue)
    assert selects(rollout["spec"]["selector"], template_labels(rollout))
    # The metrics port the PodMonitoring/PodMonitor scrapes, and the one the settings name.
    (container,) = containers(rollout)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == int(effective_setting(docs, rollout, "CHORDAL_METRICS_PORT"))
    assert effective_setting(docs, rollout, "CHORDAL_WORKER_PROCESSES") == "1"


def test_no_workload_consumes_an_undeclared_queue(docs: tuple[Doc, ...]) -> None:
    consumed = [
        queue
        for workload in workloads(docs)
        for container in containers(workload)
        if (queue := consumed_queue(container)) is not None
    ]
    assert sorted(consumed) == sorted(QUEUES)


@pytest.mark.parametrize("queue", QUEUES)
def test_each_queue_has_a_disruption_budget_of_its_own(docs: tuple[Doc, ...], queue: str) -> None:
    rollout = rollout_for(docs, queue)
    budgets = [
        budget
        for budget in of_kind(docs, "PodDisruptionBudget")
        if selects(budget["spec"]["selector"], template_labels(rollout))
    ]
    assert [budget["metadata"]["name"] for budget in budgets] == [rollout["metadata"]["name"]]
    (budget,) = budgets
    # One pod at a time, whatever the pool's size (KEDA may hold it at one, or zero).
    assert budget["spec"].get("maxUnavailable") == 1
    others = [other for other in workloads(docs) if other is not rollout]
    assert not any(selects(budget["spec"]["selector"], template_labels(o)) for o in others)


@pytest.mark.parametrize("tier", [tier.value for tier in QUALITY_TIERS])
def test_keda_scales_each_tier_rollout_on_its_own_queue(docs: tuple[Doc, ...], tier: str) -> None:
    queue = Tier(tier).queue
    rollout = rollout_for(docs, queue)
    scaled = [
        doc
        for doc in of_kind(docs, "ScaledObject")
        if doc["spec"]["scaleTargetRef"].get("name") == rollout["metadata"]["name"]
    ]
    assert len(scaled) == 1
    spec = scaled[0]["spec"]

    assert spec["scaleTargetRef"]["apiVersion"] == ROLLOUT_API
    assert spec["scaleTargetRef"]["kind"] == "Rollout"
    assert "replicas" not in rollout["spec"]  # the autoscaler's, not every apply's
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert spec["cooldownPeriod"] > 0
    queries = [trigger["metadata"]["query"] for trigger in spec["triggers"]]
    assert all(f'queue="{queue}"' in query for query in queries)
    assert f'max(chordal_queue_depth{{queue="{queue}"}})' in queries
    assert any(
        "chordal_queue_oldest_age_seconds" in q and q.endswith("or vector(0)") for q in queries
    )
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        # KEDA's trigger metadata is a map of strings: a bare YAML number is rejected.
        assert all(isinstance(value, str) for value in metadata.values()), metadata
        assert float(metadata["threshold"]) > 0
        if "fallback" in spec:  # KEDA refuses a fallback unless every trigger is AverageValue
            assert trigger["metricType"] == "AverageValue"
        if metadata.get("query", "").startswith("max(chordal_queue_depth"):
            assert metadata["ignoreNullValues"] == "false"  # unknown is not zero


def test_keda_queries_managed_prometheus_with_workload_identity_or_prometheus_operator(
    docs: tuple[Doc, ...],
) -> None:
    operator = bool(of_kind(docs, "PrometheusRule"))
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            address = trigger["metadata"]["serverAddress"]
            if operator:
                assert address == "http://prometheus-operated.monitoring.svc.cluster.local:9090"
                assert "authenticationRef" not in trigger
            else:
                assert GMP_QUERY_API.match(address), address
                auth = find(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
                assert auth["spec"]["podIdentity"]["provider"] == "gcp"


@pytest.mark.parametrize("queue", QUEUES)
def test_rollouts_go_10_then_50_percent_judged_on_the_canary(
    docs: tuple[Doc, ...], queue: str
) -> None:
    canary = rollout_for(docs, queue)["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    # Pauses aside: 10%, judged; 50%, judged; everything.
    shape = [
        ("setWeight", step["setWeight"]) if "setWeight" in step else ("analysis", None)
        for step in steps
        if "pause" not in step
    ]
    assert shape == [
        ("setWeight", 10), ("analysis", None), ("setWeight", 50), ("analysis", None),
        ("setWeight", 100),
    ]  # fmt: skip
    for analysis in (step["analysis"] for step in steps if "analysis" in step):
        (template,) = analysis["templates"]
        find(docs, "AnalysisTemplate", template["templateName"])
        args = {arg["name"]: arg for arg in analysis["args"]}
        if queue == ROUTER_QUEUE:  # the router finishes no job: the fleet's jobs judge it
            assert args["pool"]["value"] == ".+"
        else:
            assert args["pool"]["value"] == pool(queue)
            assert args["version"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    assert canary.get("maxUnavailable") == 0


def test_analysis_aborts_above_5_percent_of_failed_jobs(docs: tuple[Doc, ...]) -> None:
    (template,) = of_kind(docs, "AnalysisTemplate")
    assert {arg["name"] for arg in template["spec"]["args"]} == {"pool", "version"}
    (metric,) = template["spec"]["metrics"]
    query = metric["provider"]["prometheus"]["query"]

    assert metric["failureCondition"] == "result[0] > 0.05"
    assert metric["failureLimit"] == 0
    assert "chordal_jobs_total" in query
    failed = re.findall(r'state=~"([^"]+)"', query)
    assert failed == ["failed|timed_out"]
    assert set(failed[0].split("|")) <= set(JOB_STATES)
    # Canary and stable are told apart by the `version` target label.
    assert query.count('version=~"{{args.version}}"') == 3
    assert query.count('pool=~"{{args.pool}}"') == 3
    assert query.rstrip().endswith("or vector(0)")


def test_metrics_carry_pool_and_version_from_the_pod_labels(docs: tuple[Doc, ...]) -> None:
    podmonitorings = of_kind(docs, "PodMonitoring")
    podmonitors = of_kind(docs, "PodMonitor")
    assert bool(podmonitorings) != bool(podmonitors)
    scrapers = {doc["metadata"]["name"]: doc for doc in podmonitorings + podmonitors}
    assert ALERT_JOBS | {"chordal-gateway"} == set(scrapers)
    workers = scrapers["chordal-workers"]
    for queue in QUEUES:
        assert selects(workers["spec"]["selector"], template_labels(rollout_for(docs, queue)))
    if podmonitorings:
        assert workers["spec"]["endpoints"][0]["port"] == "metrics"
        mapped = {
            label["from"]: label["to"] for label in workers["spec"]["targetLabels"]["fromPod"]
        }
        assert mapped == {"rollouts-pod-template-hash": "version", "chordal/pool": "pool"}
    else:
        for name, monitor in scrapers.items():
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
            relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
            assert relabel["job"]["replacement"] == name
        (endpoint,) = workers["spec"]["podMetricsEndpoints"]
        relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"][1:]}
        assert relabel == {
            "version": ["__meta_kubernetes_pod_label_rollouts_pod_template_hash"],
            "pool": ["__meta_kubernetes_pod_label_chordal_pool"],
        }
    # Scrape configuration lives in those objects, not in annotations.
    for workload in workloads(docs):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert not any(key.startswith("prometheus.io/") for key in annotations)


@functools.cache
def exported_series() -> frozenset[str]:
    """Series names the workers and the exporter publish (what a query may name)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.job_finished(agent="writer", tier="fast", tenant="acme", state="failed", duration_s=1)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    queues = QueueCollector("redis://127.0.0.1:1/0")  # describe() never connects
    try:
        families += queues.describe()
    finally:
        queues.close()
    samples = {sample.name for family in families for sample in family.samples}
    # The queue gauges are described without samples: no broker was read.
    return frozenset(samples | {family.name for family in families if family.type == "gauge"})


def test_queries_name_only_metrics_chordal_exports(docs: tuple[Doc, ...]) -> None:
    queries = [
        trigger["metadata"]["query"]
        for scaled in of_kind(docs, "ScaledObject")
        for trigger in scaled["spec"]["triggers"]
    ]
    queries += [
        metric["provider"]["prometheus"]["query"]
        for template in of_kind(docs, "AnalysisTemplate")
        for metric in template["spec"]["metrics"]
    ]
    names = {name for query in queries for name in CHORDAL_METRIC.findall(query)}
    assert names >= {
        "chordal_queue_depth",
        "chordal_queue_oldest_age_seconds",
        "chordal_jobs_total",
    }
    assert names <= exported_series(), sorted(names - exported_series())


def test_alert_rules_are_grafana_alerts_yml(docs: tuple[Doc, ...]) -> None:
    expected = alert_groups()
    rules = of_kind(docs, "PrometheusRule") + of_kind(docs, "Rules")
    assert len(rules) == 1
    (rule,) = rules
    groups = rule["spec"]["groups"]
    if rule["kind"] == "Rules":  # Managed Prometheus requires an interval per group
        assert all(group["interval"] for group in groups)
        groups = [{k: v for k, v in group.items() if k != "interval"} for group in groups]
    assert groups == expected


def test_secrets_are_split_by_role(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        refs = list(secret_refs(workload))
        assert {secret for secret, _ in refs} == SECRETS_BY_ROLE[role(workload)], name
        # No pod loads a whole Secret into its environment.
        for container in containers(workload):
            assert not any("secretRef" in source for source in container.get("envFrom", []))


def test_provider_keys_reach_the_tier_workers_only(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        name, tier_worker = workload["metadata"]["name"], role(workload) == "worker"
        provider_refs = {
            key for secret, key in secret_refs(workload) if secret == PROVIDER_KEYS
        } | (env_names(workload) & set(PROVIDER_KEY_VARS))
        if tier_worker:
            assert provider_refs == set(PROVIDER_KEY_VARS), name
        else:
            assert not provider_refs, name
    config = find(docs, "ConfigMap", "chordal-config")["data"]
    assert not set(config) & {*PROVIDER_KEY_VARS, "CHORDAL_BROKER_URL", "CHORDAL_FLOWER_PASSWORD"}


def test_secrets_come_from_secret_manager_when_external_secrets_are_on(
    docs: tuple[Doc, ...],
) -> None:
    external = {doc["spec"]["target"]["name"]: doc for doc in of_kind(docs, "ExternalSecret")}
    if not external:
        pytest.skip("this overlay leaves the external-secrets component out")
    assert set(external) == set().union(*SECRETS_BY_ROLE.values())
    (store,) = of_kind(docs, "SecretStore")
    for external_secret in external.values():
        assert external_secret["spec"]["secretStoreRef"] == {
            "kind": "SecretStore",
            "name": store["metadata"]["name"],
        }
    identity = store["spec"]["provider"]["gcpsm"]["auth"]["workloadIdentity"]
    account = find(docs, "ServiceAccount", identity["serviceAccountRef"]["name"])
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    # Keys mounted or named by the pods are the keys the ExternalSecrets write.
    for workload in workloads(docs):
        for secret, key in secret_refs(workload):
            written = {row["secretKey"] for row in external[secret]["spec"].get("data", [])}
            if key is not None and secret != PROVIDER_KEYS:
                assert key in written, (workload["metadata"]["name"], secret, key)


def test_each_role_has_its_own_workload_identity_and_no_api_token(docs: tuple[Doc, ...]) -> None:
    accounts = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "ServiceAccount")}
    for workload in workloads(docs):
        spec = workload["spec"]["template"]["spec"]
        account = accounts[spec["serviceAccountName"]]
        assert spec["serviceAccountName"] == f"chordal-{role(workload)}"
        assert spec["automountServiceAccountToken"] is False
        assert account["automountServiceAccountToken"] is False
        email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert re.fullmatch(
            rf"chordal-{role(workload)}@[a-z][-a-z0-9]+\.iam\.gserviceaccount\.com", email
        )
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in containers(workload):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"], workload["metadata"]["name"]
            assert container["resources"]["limits"], workload["metadata"]["name"]
            assert "readinessProbe" in container, workload["metadata"]["name"]


def test_grace_periods_fit_the_shutdown_grace_and_the_autoscaler(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        period = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert 0 < period <= AUTOSCALER_LIMIT_S, name
        if role(workload) in {"router", "worker"}:
            grace = float(effective_setting(docs, workload, "CHORDAL_SHUTDOWN_GRACE_S"))
            # The give-back and the exit need time after the grace.
            assert period >= grace + 20, name
    config = find(docs, "ConfigMap", "chordal-config")["data"]
    assert float(config["CHORDAL_VISIBILITY_TIMEOUT_S"]) > float(
        config["CHORDAL_TASK_TIME_LIMIT_S"]
    )


def test_tier_workers_on_spot_give_calls_back_within_spot_notice(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        selector = workload["spec"]["template"]["spec"].get("nodeSelector", {})
        if selector.get("cloud.google.com/gke-spot") == "true":
            assert role(workload) == "worker", workload["metadata"]["name"]
            # GKE gives pods 15 s of a Spot node's 30 s notice.
            assert float(effective_setting(docs, workload, "CHORDAL_SHUTDOWN_GRACE_S")) <= 10


def test_images_are_qualified_and_pinned(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        for container in containers(workload):
            image = container["image"]
            registry, _, rest = image.partition("/")
            assert "." in registry, f"{image}: not qualified with a registry"
            assert rest, image
            assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", rest), image
            assert not image.endswith(":latest"), image


def test_environments_use_their_own_registry_and_tag() -> None:
    chordal = {}
    for name in ENVIRONMENTS:
        images = {
            container["image"]
            for workload in workloads(render(name))
            for container in containers(workload)
            if container["image"].rsplit(":", 1)[0].endswith("/chordal/chordal")
        }
        assert len(images) == 1, (name, images)  # every Chordal process runs the same image
        chordal[name] = images.pop()
    # The Artifact Registry repository (host/project/repository) and the tag.
    registries = {image.rsplit(":", 1)[0].rsplit("/", 1)[0] for image in chordal.values()}
    tags = {image.rsplit(":", 1)[1] for image in chordal.values()}
    assert len(registries) == len(tags) == len(ENVIRONMENTS), chordal


def test_no_placeholder_is_left(docs: tuple[Doc, ...]) -> None:
    text = yaml.safe_dump_all(docs)
    assert not [word for word in PLACEHOLDERS if word in text]


def test_network_policies_deny_by_default_and_open_little(docs: tuple[Doc, ...]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    default = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert any(
        set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in default
    )
    for policy in policies:
        selected = [
            w for w in workloads(docs) if selects(policy["spec"]["podSelector"], template_labels(w))
        ]
        roles = {role(w) for w in selected}
        for rule in policy["spec"].get("egress", []):
            blocks = [peer["ipBlock"] for peer in rule.get("to", []) if "ipBlock" in peer]
            if any(block["cidr"] == "0.0.0.0/0" for block in blocks):
                # The internet: the tier workers (providers) and the query frontend only.
                assert roles <= {"worker", "gmp-frontend"}, policy["metadata"]["name"]
                assert all("10.0.0.0/8" in block.get("except", []) for block in blocks)
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                namespaces = peer.get("namespaceSelector")
                if namespaces and {"router", "worker"} & roles:  # metrics scrapes
                    (expression,) = namespaces["matchExpressions"]
                    assert set(expression["values"]) == MONITORING_NAMESPACES
    # No rule lets the router out to the internet: it calls no provider.
    router = rollout_for(docs, ROUTER_QUEUE)
    for policy in policies:
        if selects(policy["spec"]["podSelector"], template_labels(router)):
            for rule in policy["spec"].get("egress", []):
                for peer in rule.get("to", []):
                    assert peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0"


def test_gateway_is_served_probed_scaled_and_budgeted(docs: tuple[Doc, ...]) -> None:
    gateway = find(docs, "Deployment", "chordal-gateway")
    (container,) = containers(gateway)
    probes = {
        kind: container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")
    }
    assert container["args"] == ["gateway", "--host", "0.0.0.0", "--port", "8080"]
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert "replicas" not in gateway["spec"]
    autoscaler = find(docs, "HorizontalPodAutoscaler", "chordal-gateway")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "chordal-gateway"
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    budget = find(docs, "PodDisruptionBudget", "chordal-gateway")
    assert selects(budget["spec"]["selector"], template_labels(gateway))
    ingress = find(docs, "Ingress", "chordal-gateway")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/v1", "/openapi.json"}  # /metrics stays inside
    keys_file = next(
        v["value"] for v in container["env"] if v["name"] == "CHORDAL_GATEWAY_KEYS_FILE"
    )
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(keys_file).parent) in mounts


def test_exporter_probes_do_not_depend_on_the_broker(docs: tuple[Doc, ...]) -> None:
    (container,) = containers(find(docs, "Deployment", "chordal-exporter"))
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_services_select_a_workload(docs: tuple[Doc, ...]) -> None:
    for service in of_kind(docs, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert any(selects(selector, template_labels(w)) for w in workloads(docs)), service


def test_every_chordal_variable_is_a_valid_setting(
    docs: tuple[Doc, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {f"CHORDAL_{name.upper()}" for name in Settings.model_fields}
    variables = dict(find(docs, "ConfigMap", "chordal-config")["data"])
    for workload in workloads(docs):
        for container in containers(workload):
            variables |= {
                v["name"]: str(v["value"]) for v in container.get("env", []) if "value" in v
            }
    chordal = {key: value for key, value in variables.items() if key.startswith("CHORDAL_")}
    assert set(chordal) <= fields, sorted(set(chordal) - fields)
    for key, value in chordal.items():
        monkeypatch.setenv(key, value)
    Settings()  # raises if a value does not parse
