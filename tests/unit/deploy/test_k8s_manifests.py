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

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chordal.exporter import QueueCollector
from tests.unit.deploy.rendered import (
    ALERT_JOBS,
    CHORDAL_METRIC,
    ENVIRONMENTS,
    GMP_QUERY_API,
    OPTIONAL_TIERS,
    OVERLAYS,
    QUEUES,
    ROLLOUT_API,
    Doc,
    alert_groups,
    consumed_queue,
    containers,
    effective_setting,
    find,
    of_kind,
    pool,
    render,
    rollout_for,
    selects,
    template_labels,
    workloads,
)
from workers.observability.metrics import JOB_STATES, Metrics
from workers.tiers import ALL_QUEUES, QUALITY_TIERS, ROUTER_QUEUE, Tier


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
