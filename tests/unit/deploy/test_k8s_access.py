"""The Kubernetes manifests' access and hardening, in every overlay: Secrets split by role,
provider keys for the tier workers alone, a Workload Identity per role, NetworkPolicies that
deny by default, grace periods the autoscaler honours, qualified images per environment, and
probes that do not depend on the broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.rendered import (
    AUTOSCALER_LIMIT_S,
    ENVIRONMENTS,
    MONITORING_NAMESPACES,
    PLACEHOLDERS,
    PROVIDER_KEYS,
    SECRETS_BY_ROLE,
    Doc,
    containers,
    effective_setting,
    env_names,
    find,
    of_kind,
    render,
    role,
    rollout_for,
    secret_refs,
    selects,
    template_labels,
    workloads,
)
from workers.settings import PROVIDER_KEY_VARS, Settings
from workers.tiers import ROUTER_QUEUE


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
