"""Message definitions as text, for MCAP schemas on machines without ROS installed.

The LWD interfaces are read from the repository's msg/ directory (the same files lwd_msgs is
built from); the handful of upstream ROS types episodes use are vendored verbatim from ROS 2
Kilted (a test compares them with the installed packages). full_definition() assembles the
dependency-closed text in the format rosbag2 and mcap-ros2-support use for `ros2msg` schemas.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_ROOT = Path(__file__).resolve().parent / "ros_interfaces"
_BUILTIN_TYPES = {
    "bool",
    "byte",
    "char",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "string",
    "wstring",
}
_SEPARATOR = "=" * 80


def definition_path(type_name: str) -> Path:
    """Path of 'pkg/msg/Name' (or 'pkg/Name'); raises FileNotFoundError naming the type."""
    pkg, kind, name = _split(type_name)
    if pkg == "lwd_msgs":
        path = _ROOT / "lwd_msgs" / f"{name}.{kind}"
    else:
        path = _ROOT / pkg / kind / f"{name}.{kind}"
    if not path.is_file():
        raise FileNotFoundError(f"no definition for {type_name!r} (looked at {path})")
    return path


@cache
def definition_text(type_name: str) -> str:
    return definition_path(type_name).read_text()


def _split(type_name: str) -> tuple[str, str, str]:
    parts = type_name.split("/")
    if len(parts) == 2:
        return parts[0], "msg", parts[1]
    if len(parts) == 3 and parts[1] in ("msg", "srv"):
        return parts[0], parts[1], parts[2]
    raise ValueError(f"bad ROS type name {type_name!r}; expected 'pkg/msg/Name'")


def _dependencies(type_name: str) -> list[str]:
    """Non-builtin field types of a definition, as 'pkg/msg/Name' (constants are skipped)."""
    pkg, _, _ = _split(type_name)
    deps = []
    for raw in definition_text(type_name).splitlines():
        tokens = raw.split("#", 1)[0].split()
        if len(tokens) < 2 or "=" in tokens[1]:
            continue  # blank, comment, or a constant declaration "type NAME=value"
        base = re.sub(r"<=\d+$", "", re.sub(r"\[.*\]$", "", tokens[0]))
        if base in _BUILTIN_TYPES:
            continue
        if base == "Header":
            deps.append("std_msgs/msg/Header")
        elif "/" in base:
            deps.append(f"{base.split('/')[0]}/msg/{base.split('/')[-1]}")
        else:
            deps.append(f"{pkg}/msg/{base}")
    return deps


@cache
def full_definition(type_name: str) -> str:
    """Dependency-closed definition: the type's text, then each dependency once (ROS 2 style)."""
    pkg, kind, name = _split(type_name)
    root = f"{pkg}/{kind}/{name}"
    seen: list[str] = []
    stack = list(_dependencies(root))
    while stack:
        dep = stack.pop(0)
        if dep in seen:
            continue
        seen.append(dep)
        stack.extend(_dependencies(dep))
    parts = [definition_text(root).rstrip("\n")]
    for dep in seen:
        dep_pkg, _, dep_name = _split(dep)
        parts.append(f"{_SEPARATOR}\nMSG: {dep_pkg}/{dep_name}\n{definition_text(dep).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


def schema_name(type_name: str) -> str:
    """MCAP schema name as rosbag2 writes it: 'pkg/msg/Name'."""
    pkg, kind, name = _split(type_name)
    return f"{pkg}/{kind}/{name}"
