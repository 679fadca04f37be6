"""Which code produced a result file (the git commit, local changes), and writing the probes' result files."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def git_info(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}``; ``{"commit": "unknown", "dirty": None}`` outside a git checkout."""

    def git(*args: str) -> str:
        argv = ["git", "-C", str(repo), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def git_label(repo: Path = REPO) -> str:
    """``<sha>`` or ``<sha>+dirty`` (one string for a results field)."""
    info = git_info(repo)
    return info["commit"] + ("+dirty" if info["dirty"] else "")


def write_probe_result(out: Path, stem: str, result: dict[str, Any], summary: Callable[[Path], str]) -> Path:
    """Write ``<out>/<stem>.json`` and rewrite ``<out>/README.md`` from every JSON there (the probes' output)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=1))
    (out / "README.md").write_text(summary(out))
    print(f"wrote {path} and {out / 'README.md'}")
    return path
