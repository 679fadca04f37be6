"""The Docker files can't be built here (no Docker engine), so lint what can be linted:
compose parses, every COPY source exists, and each image keeps to its side of the wall."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^\s*COPY\s+(?!--from)(.+)$", line)
        if match:
            parts = match.group(1).split()
            sources.extend(p for p in parts[:-1] if not p.startswith("--"))
    return sources


def test_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} >= {"robot.Dockerfile", "learner.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist(dockerfile):
    for src in _copy_sources(dockerfile):
        assert (REPO / src).exists(), f"{dockerfile.name}: COPY source {src!r} does not exist"


def test_robot_image_has_no_jax_and_learner_image_has_no_ros():
    robot = (REPO / "docker/robot.Dockerfile").read_text() + (REPO / "requirements/robot.txt").read_text()
    learner = (REPO / "docker/learner.Dockerfile").read_text() + (REPO / "requirements/learner.txt").read_text()
    assert not re.search(r"\bjax\b|\bflax\b", robot)
    assert not re.search(r"ros-kilted|rclpy", learner)


def test_compose_parses_and_builds_from_repo_dockerfiles():
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "mosquitto", "coordinator", "learner"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file(), name


def test_compose_commands_exist_in_the_lwd_cli():
    from lwd_learner.cli import COMMANDS

    services = yaml.safe_load((REPO / "docker/compose.yaml").read_text())["services"]
    learner_image = (REPO / "docker/learner.Dockerfile").read_text()
    assert 'ENTRYPOINT ["lwd"]' in learner_image
    for name, service in services.items():
        if service.get("build", {}).get("dockerfile") == "docker/learner.Dockerfile":
            assert service["command"][0] in COMMANDS, f"{name}: `lwd {service['command'][0]}` does not exist"


def test_learner_image_installs_what_publishing_imports():
    learner_image = (REPO / "docker/learner.Dockerfile").read_text()
    assert "requirements/export.txt" in learner_image and "onnxruntime" in learner_image  # jax2onnx + self-check


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_requirement_installs_are_pinned_by_the_setup_constraints(dockerfile):
    """An image resolves the same versions `make setup` tested: every `pip install -r` takes -c constraints."""
    text = dockerfile.read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if re.search(r"pip3? install\b.*\s-r\s", line)]
    assert installs, f"{dockerfile.name}: no pip install -r line"
    for line in installs:
        assert "-c requirements/constraints.txt" in line, f"{dockerfile.name}: unpinned install: {line.strip()}"
    constraints = (REPO / "constraints.txt").read_text()
    assert "COPY constraints.txt" in dockerfile.read_text() and "onnxruntime==" in constraints
