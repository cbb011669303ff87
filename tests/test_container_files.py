"""The container files (Dockerfiles, the two compose files, Prometheus and Grafana) agree with
the repository and with each other. Static only: CI has no container engine. Every checker
in tests/container_checks.py is also run on a deliberately broken document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway.ingest import metrics
from gateway.settings import Settings, device_broker_url
from tests.container_checks import (
    DOCKER,
    SCALE_OUT,
    Doc,
    address_problems,
    build_problems,
    command_problems,
    dashboard_problems,
    dependency_problems,
    dockerfile_problems,
    dockerignore,
    healthcheck_problems,
    ignored,
    image_problems,
    load,
    mount_problems,
    mounts,
    namespace_problems,
    scrape_problems,
)

# The project's stable metric names, as the dashboard queries them, with their labels.
STABLE = {
    "aidlink_ingest_messages_total": {"result"},
    "aidlink_dead_letters_total": {"reason"},
    "aidlink_ingest_latency_seconds_bucket": {"le"},
    "aidlink_devices_online": {"principal"},
    "aidlink_licences_expiring": {"principal"},
}

@pytest.fixture(scope="module")
def compose() -> Doc:
    return load(DOCKER / "compose.yaml")


def test_the_stack_compose_file_is_consistent(compose: Doc) -> None:
    assert set(compose["services"]) >= {"broker-config", "migrate", "mosquitto", "timescaledb",
                                        "gateway", "api", "prometheus", "grafana"}
    assert image_problems(compose) == []
    assert build_problems(compose, DOCKER) == []
    assert mount_problems(compose, DOCKER) == []
    assert dependency_problems(compose) == []
    assert command_problems(compose) == []
    assert healthcheck_problems(compose) == []
    assert namespace_problems(compose) == []


def test_the_stack_starts_in_order_and_the_broker_reads_the_generated_files(
        compose: Doc) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for name in ("broker-config", "gateway", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully", name
    assert services["mosquitto"]["depends_on"]["broker-config"]["condition"] == \
        "service_completed_successfully"
    out = services["broker-config"]["command"]
    directory = out[out.index("--out") + 1]
    assert ("broker", directory) in mounts(services["broker-config"])
    assert ("broker", directory) in mounts(services["mosquitto"])
    assert services["mosquitto"]["command"][-1] == f"{directory}/mosquitto.conf"
    # The generated plain listener binds loopback: the gateway must share the broker's.
    assert services["gateway"]["network_mode"] == "service:mosquitto"
    assert "@127.0.0.1:" in services["gateway"]["environment"]["AIDLINK_MQTT_URL"]


def test_bundles_name_the_brokers_tls_listener_under_its_certificates_name(
        compose: Doc) -> None:
    services = compose["services"]
    url = services["api"]["environment"]["AIDLINK_DEVICE_BROKER_URL"]
    found = re.fullmatch(r"mqtts://(\$\{AIDLINK_BROKER_HOST:\?[^}]*\}):(\d+)", url)
    assert found, url
    # The host is the name broker-config writes into the server certificate.
    config = services["broker-config"]["command"]
    names = [config[i + 1] for i, word in enumerate(config[:-1]) if word == "--server-name"]
    assert found.group(1) in names
    # The port is the TLS listener's, as the host publishes it.
    listener = config[config.index("--listener-port") + 1]
    assert f"{found.group(2)}:{listener}" in services["mosquitto"]["ports"]
    # The setting accepts the address once Compose has put the host name in.
    filled = url.replace(found.group(1), "mqtt.example.se")
    assert device_broker_url(Settings(device_broker_url=filled)) == filled
    # Every service that makes bundles is given it; the others make none.
    given = {name for name, service in services.items()
             if "AIDLINK_DEVICE_BROKER_URL" in (service.get("environment") or {})}
    assert given == {"api"}


def test_every_secret_is_required_and_the_example_holds_placeholders_only() -> None:
    lines = (DOCKER / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    variables = re.findall(r"\$\{(\w+)([^}]*)\}", text)
    assert variables
    assert [v for v, rest in variables if not rest.startswith(":?")] == []
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    assert set(example) == {v for v, _ in variables}
    assert set(example.values()) == {"replace-me"}


def test_the_readme_names_every_image_and_published_port(compose: Doc) -> None:
    readme = (DOCKER / "README.md").read_text()
    for name, service in compose["services"].items():
        if "build" not in service:
            assert f"`{service['image']}`" in readme, name
        for port in service.get("ports", []):
            assert str(port).rsplit(":", 1)[-1] in readme, f"{name}: {port}"
    assert "docker compose --env-file docker/.env -f docker/compose.yaml up" in readme


def test_prometheus_scrapes_the_gateway_and_the_api_where_they_listen(compose: Doc) -> None:
    prometheus = load(DOCKER / "prometheus" / "prometheus.yml")
    assert scrape_problems(prometheus, compose) == []
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert jobs == {"aidlink-gateway", "aidlink-api"}
    assert ("./prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in \
        mounts(compose["services"]["prometheus"])


def test_grafana_provisions_the_datasource_and_the_dashboard(compose: Doc) -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    sources = load(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert len(sources) == 1
    address = re.sub(r"^https?://", "", sources[0]["url"])
    assert address_problems(compose, address, "datasource") == []
    provider = load(provisioning / "dashboards" / "aidlink.yaml")["providers"][0]
    grafana = dict(mounts(compose["services"]["grafana"]))
    assert grafana["./grafana/dashboards"] == provider["options"]["path"]
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "aidlink.json").read_text())
    assert dashboard_problems(dashboard, sources[0]["uid"], STABLE) == []
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "histogram_quantile(0.5," in queries and "histogram_quantile(0.99," in queries


def test_the_stable_names_of_ingest_are_registered_by_the_ingest_metrics() -> None:
    exposed: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            labels = set(value._labelnames)
            if family.type == "counter":
                exposed[f"{family.name}_total"] = labels
            elif family.type == "histogram":
                exposed[f"{family.name}_bucket"] = labels | {"le"}
    for name in ("aidlink_ingest_messages_total", "aidlink_dead_letters_total",
                 "aidlink_ingest_latency_seconds_bucket"):
        assert exposed.get(name) == STABLE[name], name


def test_the_image_is_multi_stage_unprivileged_and_copies_what_exists() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert dockerfile_problems(text, stages=2) == []
    assert re.search(r"^FROM python:3\.11-slim AS runtime$", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["aidlink"]' in text
    # The build context is the repository root: local environments and secrets stay out.
    for private in (".venv/bin/python", ".git/config", "docker/.env", ".aidlink/secret.key"):
        assert ignored(private, dockerignore()), private


def test_the_scale_out_files_pass_the_checks_that_fit_them() -> None:
    doc = load(SCALE_OUT / "compose.yaml")
    assert image_problems(doc) == []
    assert build_problems(doc, SCALE_OUT) == []
    assert mount_problems(doc, SCALE_OUT, generated=("./broker", "./secrets/")) == []
    assert dependency_problems(doc) == []
    assert command_problems(doc) == []
    assert healthcheck_problems(doc) == []
    assert namespace_problems(doc) == []
    assert dockerfile_problems((SCALE_OUT / "Dockerfile").read_text(), stages=1) == []


BROKEN = """
services:
  db: {image: "postgres:latest"}
  cache: {image: redis}
  app:
    build: {context: ./nowhere}
    command: ["gateway", "--health-port", "9100", "--helth-host", "0.0.0.0"]
    volumes: ["./missing.conf:/etc/x.conf", "undeclared:/data", "/etc/passwd:/p"]
    depends_on: {db: {condition: service_healthy}, ghost: {condition: service_started}}
    healthcheck: {test: ["CMD", "curl", "http://127.0.0.1:9200/healthz"]}
  side: {image: "busybox:1.36", network_mode: "service:db", command: ["x", "--port", "1"]}
  job: {build: {context: .}, command: ["db", "nonsense"], network_mode: "service:ghost",
        pid: "service:nobody"}
"""


def test_each_checker_reports_a_broken_document(tmp_path: Path) -> None:
    doc = yaml.safe_load(BROKEN)
    assert image_problems(doc) == ["db: image 'postgres:latest' is not pinned to a version",
                                   "cache: image 'redis' has no tag"]
    assert build_problems(doc, tmp_path)[0].startswith("app: build")
    assert mount_problems(doc, tmp_path) == ["app: mounts ./missing.conf, which does not exist",
                                             "app: volume undeclared is not declared",
                                             "app: mounts the host path /etc/passwd"]
    assert dependency_problems(doc) == ["app: waits for db to be healthy; it has no check",
                                        "app: depends on unknown service ghost"]
    assert command_problems(doc) == ["app: gateway has no option --helth-host",
                                     "job: ['db', 'nonsense'] is not an aidlink command"]
    assert healthcheck_problems(doc) == ["app: its health check probes port 9200"]
    assert namespace_problems(doc) == ["job: network_mode 'service:ghost' names no service",
                                       "job: pid 'service:nobody' names no service"]
    prometheus = {"scrape_configs": [{"job_name": "x", "static_configs": [
        {"targets": ["app:9101", "nobody:80", "side:1"]}]}]}
    assert scrape_problems(prometheus, doc) == [
        "target app:9101: app listens on [9100], not 9101",
        "target nobody:80: nobody is not a service",
        "target side:1: side shares service:db but that has no alias side"]
    dashboard = {"panels": [
        {"title": "a", "targets": [{"expr": "sum by (principal) (aidlink_made_up_total)"}]},
        {"title": "b", "datasource": {"uid": "other"},
         "targets": [{"expr": "sum by (reason) (aidlink_devices_online)"}]},
        {"title": "c", "targets": []}]}
    assert dashboard_problems(dashboard, "aidlink-prometheus", STABLE) == [
        "panel 'a': aidlink_made_up_total is not a stable metric name",
        "panel 'a': aidlink_made_up_total has no label principal",
        "panel 'b': datasource other",
        "panel 'b': aidlink_devices_online has no label reason",
        "panel 'c' has no query",
        "no panel shows aidlink_dead_letters_total",
        "no panel shows aidlink_ingest_latency_seconds_bucket",
        "no panel shows aidlink_ingest_messages_total",
        "no panel shows aidlink_licences_expiring"]
    dockerfile = "FROM python:3.11-slim\nENV AIDLINK_SECRET=x\nCOPY nowhere .venv ./\n"
    assert dockerfile_problems(dockerfile, stages=2) == [
        "fewer than 2 stages", "the image runs as root", "a secret is baked into the image",
        "COPY nowhere: no such file in the repository",
        "COPY .venv: excluded by .dockerignore"]
