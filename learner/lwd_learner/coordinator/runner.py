"""Run the Coordinator as its own process: `python -m lwd_learner.coordinator --config coordinator.json`.

The Coordinator is the fleet's singleton service, so it runs apart from learners and tools: a
crash (or a kill -9) of anything else never takes it down, and it can be restarted alone. Its
configuration is one JSON file (it holds credentials, so it is written 0600 and never passed on
the command line); `write_config` produces it from a CoordinatorConfig. SIGTERM/SIGINT stop it
cleanly; un-acked messages stay on the broker for the next run either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from lwd_learner.config_files import build_dataclass, endpoint_from_dict, write_private_json
from lwd_learner.coordinator.service import Coordinator, CoordinatorConfig
from lwd_learner.coordinator.verifier import VerifierConfig
from lwd_protocol.transport import MqttEndpoint, S3Endpoint

log = logging.getLogger("lwd_learner.coordinator")


def config_to_dict(config: CoordinatorConfig) -> dict[str, Any]:
    """JSON-ready dict (paths as strings) that config_from_dict reads back to an equal config."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def _build(cls: type, data: Any, where: str) -> Any:
    try:
        return build_dataclass(cls, data, where)
    except ValueError as exc:
        raise ValueError(f"coordinator config: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> CoordinatorConfig:
    """Inverse of config_to_dict; errors name the offending field."""
    if not isinstance(data, dict):
        raise ValueError("coordinator config must be a JSON object")
    data = dict(data)
    for name in ("mqtt", "s3", "db_path"):
        if name not in data:
            raise ValueError(f"coordinator config: missing field {name!r}")
    for name, cls in (("mqtt", MqttEndpoint), ("s3", S3Endpoint)):
        try:
            data[name] = endpoint_from_dict(cls, data[name], name)
        except ValueError as exc:
            raise ValueError(f"coordinator config: {exc}") from exc
    verifier = dict(data.get("verifier") or {})
    if verifier.get("work_dir") is not None:
        verifier["work_dir"] = Path(verifier["work_dir"])
    data["verifier"] = _build(VerifierConfig, verifier, "verifier")
    data["db_path"] = Path(data["db_path"])
    return _build(CoordinatorConfig, data, "coordinator")


def write_config(path: str | os.PathLike, config: CoordinatorConfig) -> Path:
    """Write the config JSON readable by its owner only (it contains passwords)."""
    return write_private_json(path, config_to_dict(config))


def read_config(path: str | os.PathLike) -> CoordinatorConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"coordinator config {path} is not valid JSON: {exc}") from exc
    return config_from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lwd coordinator", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="JSON file written by write_config")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = read_config(args.config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    coordinator = Coordinator(config).start()
    log.info("coordinator running (db %s, pid %d)", config.db_path, os.getpid())
    try:
        if coordinator.subscribed.wait(30):
            log.info("subscribed to episode announcements")
        while not stop.wait(0.5):
            pass
    finally:
        coordinator.stop()
        log.info("coordinator stopped: %s", coordinator.counters)
    return 0
