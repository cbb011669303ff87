"""The scale-out compose file (EMQX cluster, TimescaleDB with a replica, shared-subscription
gateways) is consistent with itself and with the files beside it. Static only: the images are
not pulled or run here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent.parent / "docker" / "scale-out"
COMPOSE = HERE / "compose.yaml"
# Written at deployment, never shipped: `aidlink broker-config --out` writes broker/, the
# operator writes secrets/ (README.md says how).
GENERATED = ("./broker", "./secrets/")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def gateways(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services(compose).items()
            if s.get("command", [None])[0] == "gateway"}


def option(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_every_service_has_a_known_public_image_or_a_build_that_exists(
        compose: dict[str, Any]) -> None:
    public = re.compile(r"^(emqx/emqx:5\.\d+\.\d+|timescale/timescaledb:\d+\.\d+\.\d+-pg1[5-8]"
                        r"|haproxy:\d+\.\d+)$")
    for name, service in services(compose).items():
        build = service.get("build")
        if build is not None:
            context = (HERE / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build["dockerfile"]).is_file(), f"{name}: Dockerfile missing"
        else:
            assert public.match(service.get("image", "")), f"{name}: image {service.get('image')}"


def test_the_dockerfile_copies_only_what_exists() -> None:
    text = (HERE / "Dockerfile").read_text()
    root = HERE.parent.parent
    sources = [word for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE)
               for word in line.split()[:-1]]
    assert sources
    for source in sources:
        assert (root / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_every_mounted_file_exists_or_is_written_at_deployment(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                continue
            if source.startswith(GENERATED):
                continue
            path = HERE / source
            assert path.exists(), f"{name} mounts {source}, which does not exist"
            if path.suffix == ".sh":
                assert os.access(path, os.X_OK), f"{source} is not executable"
    readme = (HERE / "README.md").read_text()
    assert "secrets/emqx-users.csv" in readme
    assert "aidlink broker-config" in readme


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    used = {volume.split(":", 1)[0] for service in services(compose).values()
            for volume in service.get("volumes", []) if not volume.startswith(".")}
    assert used == set(compose["volumes"])


def test_published_ports_are_unique_and_dependencies_exist(compose: dict[str, Any]) -> None:
    host_ports = [str(port).split(":")[0] for service in services(compose).values()
                  for port in service.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    for name, service in services(compose).items():
        depends = service.get("depends_on", [])
        for other in depends:
            assert other in services(compose), f"{name} depends on unknown service {other}"


def test_gateways_share_one_subscription_with_fixed_ids_and_health_probes(
        compose: dict[str, Any]) -> None:
    members = gateways(compose)
    assert len(members) >= 2
    groups = {option(s["command"], "--share") for s in members.values()}
    assert groups == {"ingest"}
    ids = [option(s["command"], "--client-id") for s in members.values()]
    assert len(set(ids)) == len(ids), ids
    for name, service in members.items():
        port = option(service["command"], "--health-port")
        # Inside a container the probe and Prometheus come from outside loopback.
        assert option(service["command"], "--health-host") == "0.0.0.0"  # noqa: S104
        assert any(str(p).endswith(f":{port}") for p in service["ports"]), name
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/healthz" in probe
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_gateways_reach_emqx_through_the_balancer_and_write_to_the_primary(
        compose: dict[str, Any]) -> None:
    nodes = [name for name, s in services(compose).items()
             if s.get("image", "").startswith("emqx/")]
    assert len(nodes) >= 2
    for service in gateways(compose).values():
        env = service["environment"]
        broker = re.match(r"mqtt://[^@]+@([\w-]+):(\d+)$", env["AIDLINK_MQTT_URL"])
        assert broker is not None, env["AIDLINK_MQTT_URL"]
        assert broker.group(1) in services(compose)
        assert "@db-primary:" in env["AIDLINK_DATABASE_URL"]
    balancer = (HERE / "haproxy" / "haproxy.cfg").read_text()
    for node in nodes:
        assert f"server {node} {node}:1883" in balancer
        assert f"server {node} {node}:8883" in balancer
    seeds = services(compose)[nodes[0]]["environment"]["EMQX_CLUSTER__STATIC__SEEDS"]
    for node in nodes:
        service = services(compose)[node]
        node_name = service["environment"]["EMQX_NODE__NAME"]
        assert node_name == f"emqx@{service['hostname']}"
        assert node_name in seeds


def test_the_api_reads_patient_data_from_the_primary(compose: dict[str, Any]) -> None:
    # Every read of patient data writes the access log in the same transaction.
    api = services(compose)["api"]
    assert "@db-primary:" in api["environment"]["AIDLINK_DATABASE_URL"]
    replica = services(compose)["db-replica"]
    assert replica["environment"]["PRIMARY_HOST"] == "db-primary"


def test_emqx_queues_and_access_rules_never_fall_back_to_defaults(
        compose: dict[str, Any]) -> None:
    env = services(compose)["emqx1"]["environment"]
    # EMQX's default queue of 1000 drops the oldest message; ours is far above a day's load.
    assert int(env["EMQX_MQTT__MAX_MQUEUE_LEN"]) >= 1_000_000
    assert env["EMQX_AUTHORIZATION__NO_MATCH"] == "deny"
    acl = (HERE / "emqx" / "acl.conf").read_text()
    rules = [line for line in acl.splitlines() if line.startswith("{")]
    assert rules[-1] == "{deny, all}."
    assert '{allow, all, publish, ["aidlink/v1/${username}/#"]}.' in rules


def test_bundles_name_the_balancers_tls_port_which_reaches_every_node(
        compose: dict[str, Any]) -> None:
    url = services(compose)["api"]["environment"]["AIDLINK_DEVICE_BROKER_URL"]
    found = re.fullmatch(r"mqtts://\$\{AIDLINK_BROKER_HOST:\?[^}]*\}:(\d+)", url)
    assert found, url
    port = found.group(1)
    assert f"{port}:8883" in services(compose)["mqtt-lb"]["ports"]
    balancer = (HERE / "haproxy" / "haproxy.cfg").read_text()
    assert "bind :8883\n    default_backend emqx-mqtts" in balancer
    for name, service in services(compose).items():
        if service.get("image", "").startswith("emqx/"):
            env = service["environment"]
            assert env["EMQX_LISTENERS__SSL__DEFAULT__BIND"] == "0.0.0.0:8883", name
            assert f"server {name} {name}:8883" in balancer
