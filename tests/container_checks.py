"""Static checkers of container files (compose, Dockerfile, Prometheus, Grafana): each returns
the problems it finds, as lines naming the service, file or panel. Used by
tests/test_container_files.py, which also runs each on a deliberately broken document."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import click
import yaml

from gateway.cli import main

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
SCALE_OUT = DOCKER / "scale-out"
Doc = dict[str, Any]

# Ports images listen on without being told (their commands do not say).
IMAGE_PORTS = {"prom/prometheus": 9090, "grafana/grafana": 3000}
PORT_OPTIONS = ("--port", "--health-port")


def load(path: Path) -> Doc:
    """A YAML file that must hold a mapping."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a mapping"
    return document


def mounts(service: Doc) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            found.append((source, rest.split(":")[0]))
    return found


def image_problems(doc: Doc) -> list[str]:
    """Every image (of a service that is not built) is pinned to a version."""
    problems = []
    for name, service in doc["services"].items():
        if "build" in service:
            continue
        image = str(service.get("image", ""))
        last = image.rsplit("/", 1)[-1]
        tag = last.partition(":")[2].partition("@")[0]
        if not image or not tag:
            problems.append(f"{name}: image {image!r} has no tag")
        elif tag.startswith("latest") or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def build_problems(doc: Doc, base: Path) -> list[str]:
    """Every build context and Dockerfile exists (relative to the compose file)."""
    problems = []
    for name, service in doc["services"].items():
        build = service.get("build")
        if build is None:
            continue
        context = base / build["context"]
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if not context.is_dir() or not dockerfile.is_file():
            problems.append(f"{name}: build {context} / {dockerfile} missing")
    return problems


def mount_problems(doc: Doc, base: Path, generated: tuple[str, ...] = ()) -> list[str]:
    """Bind mounts are repository files (or written at deployment); named volumes are
    declared; no path of the host machine."""
    problems = []
    declared = set(doc.get("volumes") or {})
    for name, service in doc["services"].items():
        for source, _ in mounts(service):
            if source.startswith("/"):
                problems.append(f"{name}: mounts the host path {source}")
            elif source.startswith("."):
                if not source.startswith(generated) and not (base / source).exists():
                    problems.append(f"{name}: mounts {source}, which does not exist")
            elif source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
    return problems


def dependency_problems(doc: Doc) -> list[str]:
    """depends_on names services, with known conditions; a health wait has a check."""
    problems = []
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in doc["services"].items():
        depends = service.get("depends_on", {})
        for other in depends:
            if other not in doc["services"]:
                problems.append(f"{name}: depends on unknown service {other}")
            elif isinstance(depends, dict) and depends[other]["condition"] not in conditions:
                problems.append(f"{name}: unknown condition {depends[other]['condition']}")
            elif (isinstance(depends, dict) and depends[other]["condition"] == "service_healthy"
                  and "healthcheck" not in doc["services"][other]):
                problems.append(f"{name}: waits for {other} to be healthy; it has no check")
    return problems


def namespace_problems(doc: Doc) -> list[str]:
    """``network_mode`` and ``pid`` of the form ``service:X`` name a service of the file: the
    gateway and housekeeping reach the broker's loopback listener and its pid only through
    the namespaces they share."""
    problems = []
    for name, service in doc["services"].items():
        for key in ("network_mode", "pid"):
            mode = str(service.get(key, ""))
            if mode.startswith("service:") and mode.removeprefix("service:") \
                    not in doc["services"]:
                problems.append(f"{name}: {key} {mode!r} names no service")
    return problems


def listening_ports(service: Doc) -> set[int]:
    """The ports a service's command listens on (its options, else its image's default)."""
    command = [str(word) for word in service.get("command", [])]
    ports = {int(command[i + 1]) for i, word in enumerate(command[:-1]) if word in PORT_OPTIONS}
    image = str(service.get("image", "")).split(":")[0]
    return ports or ({IMAGE_PORTS[image]} if image in IMAGE_PORTS else set())


def address_problems(doc: Doc, address: str, what: str) -> list[str]:
    """``host:port`` names a service (or an alias of its network namespace) and a port that
    service listens on."""
    host, _, port = address.rpartition(":")
    service = doc["services"].get(host)
    if service is None:
        return [f"{what}: {host} is not a service"]
    problems = []
    mode = str(service.get("network_mode", ""))
    if mode.startswith("service:"):
        owner = doc["services"].get(mode.removeprefix("service:"), {})
        aliases = [alias for network in (owner.get("networks") or {}).values()
                   for alias in (network or {}).get("aliases", [])]
        if host not in aliases:
            problems.append(f"{what}: {host} shares {mode} but that has no alias {host}")
    if int(port) not in listening_ports(service):
        problems.append(f"{what}: {host} listens on {sorted(listening_ports(service))}, "
                        f"not {port}")
    return problems


def scrape_problems(prometheus: Doc, doc: Doc) -> list[str]:
    """Every scrape target is a service and a port it listens on."""
    targets = [target for job in prometheus["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]]
    if not targets:
        return ["no scrape targets"]
    return [problem for target in targets
            for problem in address_problems(doc, target, f"target {target}")]


def command_problems(doc: Doc) -> list[str]:
    """The aidlink commands the built services run exist, with the options they pass."""
    problems = []
    for name, service in doc["services"].items():
        if "build" not in service or "entrypoint" in service:
            continue
        words = [str(word) for word in service["command"]]
        command: click.Command = main
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        if isinstance(command, click.Group):
            problems.append(f"{name}: {service['command']} is not an aidlink command")
            continue
        known = {opt for param in command.params for opt in param.opts}
        problems += [f"{name}: {command.name} has no option {word}" for word in words
                     if word.startswith("--") and word not in known]
    return problems


def healthcheck_problems(doc: Doc) -> list[str]:
    """A health check probes a port its service listens on."""
    problems = []
    for name, service in doc["services"].items():
        probe = " ".join(service.get("healthcheck", {}).get("test", []))
        for port in re.findall(r"127\.0\.0\.1:(\d+)/", probe):
            if int(port) not in listening_ports(service):
                problems.append(f"{name}: its health check probes port {port}")
    return problems


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` keep ``path`` out of the build context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
               or fnmatch.fnmatch(parts[i], pattern.removeprefix("**/"))
               for pattern in patterns for i, prefix in enumerate(prefixes))


def dockerignore() -> list[str]:
    """The patterns of the repository's .dockerignore."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerfile_problems(text: str, *, stages: int) -> list[str]:
    """At least ``stages`` stages, a non-root user, no baked secret, and every COPY source
    in the repository and in the build context."""
    problems = []
    if len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) < stages:
        problems.append(f"fewer than {stages} stages")
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root")
    if re.search(r"^(ENV|ARG) .*(SECRET|PASSWORD|PASSPHRASE)", text, flags=re.MULTILINE):
        problems.append("a secret is baked into the image")
    patterns = dockerignore()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE):
        words = [word for word in line.split() if not word.startswith("--")]
        if "--from=" in line:
            continue
        for source in words[:-1]:
            if not (ROOT / source).exists():
                problems.append(f"COPY {source}: no such file in the repository")
            elif ignored(source, patterns):
                problems.append(f"COPY {source}: excluded by .dockerignore")
    return problems


def dashboard_problems(dashboard: Doc, datasource_uid: str,
                       stable: dict[str, set[str]]) -> list[str]:
    """Every panel queries the provisioned datasource, only ``stable`` metric names and only
    their labels; every stable name is shown."""
    problems = []
    used: set[str] = set()
    for panel in dashboard["panels"]:
        if not panel.get("targets"):
            problems.append(f"panel {panel['title']!r} has no query")
        for target in panel.get("targets", []):
            for source in (panel.get("datasource"), target.get("datasource")):
                if source is not None and source["uid"] != datasource_uid:
                    problems.append(f"panel {panel['title']!r}: datasource {source['uid']}")
            names = set(re.findall(r"\baidlink_\w+", target["expr"]))
            used |= names
            problems += [f"panel {panel['title']!r}: {n} is not a stable metric name"
                         for n in names - set(stable)]
            allowed: set[str] = set()
            for known in names:
                allowed |= stable.get(known, set())
            for labels in re.findall(r"\bby \(([^)]*)\)", target["expr"]):
                problems += [f"panel {panel['title']!r}: {n} has no label {label}"
                             for label in re.split(r"\s*,\s*", labels.strip())
                             if label not in allowed for n in names]
    problems += [f"no panel shows {name}" for name in sorted(set(stable) - used)]
    return problems
