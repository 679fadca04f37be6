"""Config files of the cloud-side processes (Coordinator, chaos learner): they hold credentials.

Written 0600 and passed by path, never on the command line; endpoints (with their TLS settings)
are read back with errors that name the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lwd_protocol.transport import MqttEndpoint, S3Endpoint, TlsSettings


def write_private_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON readable by its owner only (paths and other objects as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
    return path


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)``; a non-object, an unknown field or a bad value raises ValueError naming ``where``."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field {where}.{unknown[0]}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def endpoint_from_dict(cls: type[MqttEndpoint] | type[S3Endpoint], data: Any, where: str) -> Any:
    """An MQTT or S3 endpoint from its ``dataclasses.asdict`` form, TLS settings included."""
    section = dict(data) if isinstance(data, dict) else data
    if isinstance(section, dict) and section.get("tls") is not None:
        section["tls"] = build_dataclass(TlsSettings, section["tls"], f"{where}.tls")
    return build_dataclass(cls, section, where)
