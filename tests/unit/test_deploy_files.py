"""Deployment files: Grafana dashboards, Prometheus rules, compose, Kubernetes, Docker and CI.

Nothing here starts a container: each file is parsed, and every PromQL expression (dashboards,
alert rules, KEDA triggers) may name only metrics that Chordal really exports, as read from
:class:`workers.observability.metrics.Metrics`,
:class:`workers.observability.metrics.FleetCollector` and :class:`chordal.exporter.QueueCollector`.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chordal.exporter import QueueCollector
from workers.observability.metrics import FleetCollector, Metrics
from workers.settings import Settings
from workers.tiers import QUALITY_TIERS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMETHEUS_CONFIG = GRAFANA / "prometheus" / "prometheus.yml"
ALERTS = GRAFANA / "prometheus" / "alerts.yml"
COMPOSE = ROOT / "compose.yaml"
# The pools every deployment runs. The local tier is opt-in and needs a model server beside its
# workers, which a cluster brings itself (vLLM, Ollama): k8s/README.md says how to add its pool.
TIERS = [tier.value for tier in QUALITY_TIERS]

CHORDAL_METRIC = re.compile(r"\bchordal_[a-z0-9_]+")
UP_SELECTOR = re.compile(r"\bup\s*\{([^}]*)\}")
BARE_UP = re.compile(r"\bup\b(?!\s*\{)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
JOBS = {"chordal-workers", "chordal-exporter"}
PANEL_TYPES = {"timeseries", "stat", "table"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")

# Every documented series (docs of workers/observability/metrics.py and chordal/exporter.py), so
# that an empty or broken extraction cannot pass unnoticed.
DOCUMENTED = {
    "chordal_jobs_started_total",
    "chordal_jobs_total",
    "chordal_agent_duration_seconds_bucket",
    "chordal_llm_request_duration_seconds_bucket",
    "chordal_llm_requests_total",
    "chordal_llm_tokens_total",
    "chordal_llm_cost_usd_total",
    "chordal_errors_total",
    "chordal_reroutes_total",
    "chordal_breaker_state",
    "chordal_breaker_open",
    "chordal_budget_limit_usd",
    "chordal_budget_remaining_usd",
    "chordal_ratelimit_remaining_requests",
    "chordal_ratelimit_remaining_tokens",
    "chordal_fleet_up",
    "chordal_queue_depth",
    "chordal_queue_oldest_age_seconds",
    "chordal_queue_up",
}
# What each dashboard must show (metric names its expressions use).
DASHBOARD_METRICS = {
    "agent-overview.json": {
        "chordal_jobs_total",
        "chordal_agent_duration_seconds_bucket",
        "chordal_llm_request_duration_seconds_bucket",
        "chordal_errors_total",
        "chordal_reroutes_total",
        "chordal_breaker_state",
    },
    "llm-cost.json": {
        "chordal_llm_cost_usd_total",
        "chordal_llm_tokens_total",
        "chordal_budget_remaining_usd",
        "chordal_llm_requests_total",
    },
    "queues-autoscaling.json": {
        "chordal_queue_depth",
        "chordal_queue_oldest_age_seconds",
        "chordal_queue_up",
        "chordal_ratelimit_remaining_requests",
        "chordal_ratelimit_remaining_tokens",
    },
}
# Required alerts, and a piece each one's expression must contain.
REQUIRED_ALERTS = {
    "ChordalJobFailureRateHigh": "chordal_jobs_total",
    "ChordalQueueOldestMessageStale": "chordal_queue_oldest_age_seconds",
    "ChordalCircuitBreakerOpen": "chordal_breaker_open",
    "ChordalBudgetBurnRateHigh": "predict_linear(chordal_budget_remaining_usd",
    "ChordalWorkerDown": 'up{job="chordal-workers"} == 0',
    "ChordalBrokerDown": "chordal_queue_up == 0",
}
COMPOSE_SERVICES = {
    "valkey", "simulator", "router", "fast", "balanced", "premium",
    "gateway", "exporter", "flower", "prometheus", "grafana",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def all_exprs() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL expression in the deployment files."""
    exprs = [
        (path.name, expr)
        for path in DASHBOARDS
        for expr in dashboard_exprs(json.loads(path.read_text()))
    ]
    exprs += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return exprs


def balanced(expr: str) -> bool:
    """Whether (), [] and {} nest properly outside string literals."""
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    """Every series name Chordal exports: workers' metrics, the fleet's and the queues' gauges."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.job_started(agent="writer", tier="fast", tenant="acme")
    metrics.job_finished(agent="writer", tier="fast", tenant="acme", state="failed", duration_s=2.0)
    metrics.llm_call(
        provider="openai", model="gpt-4o-mini", tier="fast", tenant="acme", agent="writer",
        outcome="RateLimited", latency_s=0.4, tokens_in=10, tokens_out=5, cost_usd=0.001,
    )  # fmt: skip
    metrics.error(kind="InvalidJob")
    metrics.reroute(reason_kind="reroute")
    registry.register(
        FleetCollector(
            breakers=lambda: {"gpt-4o-mini": "open"},
            budgets=lambda: {"acme": (5.0, 2.5)},
            headroom=lambda: {"gpt-4o-mini": (100, 10_000)},
        )
    )
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    # The queue collector reads a broker when collected; describe() gives its families without
    # one (the connection opens on the first read, which never comes).
    queues = QueueCollector("redis://127.0.0.1:1/0")
    try:
        families += queues.describe()
    finally:
        queues.close()
    samples = {sample.name for family in families for sample in family.samples}
    gauges = {family.name for family in families if family.type == "gauge"}
    return frozenset(name for name in samples | gauges if name.startswith("chordal_"))


def test_exported_names_include_every_documented_series(exported: frozenset[str]) -> None:
    assert exported >= DOCUMENTED, sorted(DOCUMENTED - exported)


def test_every_expression_names_only_exported_metrics(exported: frozenset[str]) -> None:
    exprs = all_exprs()
    assert len(exprs) > 40  # dashboards, alerts and KEDA all contributed
    unknown = {
        (where, name)
        for where, expr in exprs
        for name in CHORDAL_METRIC.findall(expr)
        if name not in exported
    }
    assert not unknown, sorted(unknown)


def test_up_is_only_used_for_chordal_jobs() -> None:
    for where, expr in all_exprs():
        for matchers in UP_SELECTOR.findall(expr):
            jobs = set(re.findall(r'\bjob\s*=\s*"([^"]*)"', matchers))
            assert jobs, f"{where}: up{{{matchers}}} names no job"
            assert jobs <= JOBS, f"{where}: up{{{matchers}}}"
        assert not BARE_UP.search(STRING.sub('""', expr)), f"{where}: up without a job: {expr}"


def test_every_expression_reads_a_metric_and_nests_properly() -> None:
    for where, expr in all_exprs():
        assert CHORDAL_METRIC.search(expr) or UP_SELECTOR.search(expr), f"{where}: {expr}"
        assert balanced(expr), f"{where}: unbalanced brackets in {expr}"


def test_histogram_buckets_are_read_through_histogram_quantile_by_le() -> None:
    for where, expr in all_exprs():
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr, f"{where}: {expr}"
            assert re.search(r"by \([^)]*\ble\b", expr), f"{where}: quantile without `by (le)`"


def test_the_three_dashboards_exist() -> None:
    assert {path.name for path in DASHBOARDS} == set(DASHBOARD_METRICS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())

    assert dashboard["uid"]
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_shows_what_it_is_for(path: Path) -> None:
    used = {
        name
        for expr in dashboard_exprs(json.loads(path.read_text()))
        for name in CHORDAL_METRIC.findall(expr)
    }
    assert DASHBOARD_METRICS[path.name] <= used, sorted(DASHBOARD_METRICS[path.name] - used)


def test_queues_dashboard_counts_workers() -> None:
    exprs = dashboard_exprs(
        json.loads((GRAFANA / "dashboards" / "queues-autoscaling.json").read_text())
    )
    assert any('count(up{job="chordal-workers"} == 1)' in expr for expr in exprs)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "chordal.yaml")["providers"]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]

    assert [source["type"] for source in datasources["datasources"]] == ["prometheus"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert [provider["options"]["path"] for provider in providers] == [
        "/var/lib/grafana/dashboards"
    ]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]

    assert len(names) == len(set(names))
    by_name = {rule["alert"]: rule for rule in rules}
    for name, piece in REQUIRED_ALERTS.items():
        assert piece in by_name[name]["expr"], name
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert DURATION.match(rule.get("for", "0s")), rule["alert"]


def test_prometheus_scrapes_workers_and_exporter_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file
    workers = jobs["chordal-workers"]["dns_sd_configs"][0]
    assert set(workers["names"]) == {"router", *TIERS}
    assert workers["port"] == 9100
    assert jobs["chordal-exporter"]["static_configs"][0]["targets"] == ["exporter:9808"]


def compose_services() -> dict[str, dict[str, Any]]:
    """compose.yaml's services, anchors and merge keys resolved."""
    services: dict[str, dict[str, Any]] = load_yaml(COMPOSE)["services"]
    return services


def test_compose_has_every_service() -> None:
    assert set(compose_services()) >= COMPOSE_SERVICES


def test_compose_mounts_only_paths_that_exist() -> None:
    compose = load_yaml(COMPOSE)
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in named, f"{name}: undeclared volume {source}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()


def test_compose_mounts_prometheus_rules_next_to_its_config() -> None:
    volumes = compose_services()["prometheus"]["volumes"]
    targets = {volume.split(":")[0]: volume.split(":")[1] for volume in volumes}

    config_target = targets["./grafana/prometheus/prometheus.yml"]
    for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        local = f"./grafana/prometheus/{rule_file}"
        assert targets[local] == str(Path(config_target).parent / rule_file)


def test_compose_workers_run_the_right_command_and_serve_metrics() -> None:
    services = compose_services()
    commands = {"router": ["worker", "--router"]} | {
        tier: ["worker", "--tier", tier] for tier in TIERS
    }
    for name, command in commands.items():
        assert services[name]["command"] == command
        environment = services[name]["environment"]
        assert environment["CHORDAL_METRICS_PORT"] == "9100"
        # one process per container: the one Prometheus scrapes on that port
        assert environment["CHORDAL_WORKER_PROCESSES"] == "1"
        # Servers refuse a Redis without a password; compose refuses to start without one.
        assert environment["CHORDAL_BROKER_URL"] == (
            "redis://:${VALKEY_PASSWORD:?set VALKEY_PASSWORD}@valkey:6379/0"
        )
        assert environment["CHORDAL_PROFILE"] == "offline"
        assert environment["CHORDAL_SIMULATOR_URL"] == "http://simulator:8765/v1"
    assert services["exporter"]["command"] == ["exporter", "--port", "9808", "--addr", "0.0.0.0"]


def test_compose_simulator_listens_beyond_its_container() -> None:
    # `chordal sim` binds 127.0.0.1: the service runs the simulator's own entry point.
    command = shlex.split(" ".join(compose_services()["simulator"]["command"]))
    start = command.index("chordal.simulator")
    assert command[start : start + 5] == [
        "chordal.simulator",
        "--host",
        "0.0.0.0",
        "--port",
        "8765",
    ]


def test_compose_valkey_and_flower_settings() -> None:
    services = compose_services()
    assert services["valkey"]["image"].startswith("valkey/valkey:8")
    assert "--appendonly" in services["valkey"]["command"]
    assert "noeviction" in services["valkey"]["command"]
    assert "--requirepass" in services["valkey"]["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${CHORDAL_FLOWER_USER"
    )
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def compose_value(value: str) -> str:
    """``value`` as compose interpolates it: ``${VAR:-default}`` gives its default (as compose
    reads it, up to the first ``}``), ``${VAR:?error}`` a stand-in for the required value."""
    required = re.sub(r"\$\{\w+:\?[^}]*\}", "secret", value)
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", required)


def chordal_settings() -> dict[str, str]:
    """Every CHORDAL_* variable compose and the Dockerfile set (the ConfigMap's are checked in
    tests/unit/deploy)."""
    found: dict[str, str] = {}
    for service in compose_services().values():
        environment = service.get("environment") or {}
        found |= {
            key: compose_value(str(value))
            for key, value in environment.items()
            if key.startswith("CHORDAL_")
        }
    for key, value in re.findall(r"\b(CHORDAL_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()):
        found[key] = value
    return found


def test_every_chordal_variable_is_a_valid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"CHORDAL_{name.upper()}" for name in Settings.model_fields}
    variables = chordal_settings()

    assert set(variables) <= fields, sorted(set(variables) - fields)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    Settings()  # raises if a value does not parse


def test_dockerfile_builds_from_the_lock_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in instructions if line.startswith("FROM ")]

    # Two stages: a builder, and a runtime of the same base that only copies the venv.
    assert stages == ["FROM python:3.11-slim AS builder", "FROM python:3.11-slim"]
    runtime = instructions[instructions.index(stages[1]) :]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert not any("pip install" in line or "apt-get" in line for line in runtime)
    assert "--require-hashes" in dockerfile
    assert "-r requirements.lock" in dockerfile
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users, "the image must switch to a user"
    assert users[-1].split(":")[0].isdigit()
    assert users[-1].split(":")[0] != "0"
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in dockerfile
    healthchecks = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1
    assert healthchecks[0].endswith('CMD ["chordal", "health"]')
    assert 'ENTRYPOINT ["chordal"]' in instructions
    assert instructions[-1] == 'CMD ["--help"]'


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.MULTILINE)
    names = {name.lower().replace("_", "-") for name, _ in pins}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"]
    direct = {re.split(r"[<>=\[ ;]", line, maxsplit=1)[0].lower() for line in requirements}

    assert direct <= names, sorted(direct - names)
    # Every pinned package carries at least one hash (pip --require-hashes refuses otherwise).
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(pins)
    assert all("--hash=sha256:" in block for block in blocks)


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv"} <= ignored
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        # Sources from the build context, not from an earlier stage.
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert {"pyproject.toml", "requirements.lock", "bench"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_ci_runs_make_test_with_chromium() -> None:
    workflow = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    job = workflow["jobs"]["test"]
    commands = " ".join(step.get("run", "") for step in job["steps"])

    assert {"push", "pull_request"} <= set(triggers)
    assert job["runs-on"] == "ubuntu-latest"
    assert "3.11" in job["strategy"]["matrix"]["python"]
    assert "apt-get install -y chromium chromium-driver" in commands
    assert "make test" in commands


@pytest.mark.parametrize("service", ["router", *TIERS])
def test_compose_worker_outlives_its_shutdown_grace(service: str) -> None:
    # A worker gets CHORDAL_SHUTDOWN_GRACE_S (30 s by default) on SIGTERM, then gives back what
    # it still holds and exits: compose must not SIGKILL it before.
    grace = compose_services()[service]["stop_grace_period"]
    seconds = {"s": 1, "m": 60, "h": 3600}
    total = sum(int(n) * seconds[unit] for n, unit in re.findall(r"(\d+)([smh])", grace))
    assert total > Settings().shutdown_grace_s


def test_compose_has_no_default_passwords() -> None:
    text = COMPOSE.read_text()
    assert "change-me" not in text
    # Each password is required: compose refuses to start (":?") rather than run without one.
    for variable in ("VALKEY_PASSWORD", "CHORDAL_FLOWER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, variable
        assert all(use.startswith(":?") for use in uses), (variable, uses)


def test_compose_gateway_serves_on_every_interface_with_keys() -> None:
    gateway = compose_services()["gateway"]
    assert gateway["command"] == ["gateway", "--host", "0.0.0.0", "--port", "8080"]
    assert "CHORDAL_GATEWAY_KEYS" in gateway["environment"]
    assert any(port.endswith(":8080") for port in gateway["ports"])
