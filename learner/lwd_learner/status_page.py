"""Fleet status web page (read-only): robots, policy versions, episodes, success by task and version.

`lwd status-page --db coordinator.sqlite --mqtt-... --port 8080` serves, on 127.0.0.1 by default:
  /             an HTML page (server-rendered, refreshes itself every 5 s; works without JavaScript)
  /api/status   the same data as JSON
Everything else, and every method but GET/HEAD, is refused: the page can look, never act.

Data: the Coordinator's snapshot store opened read-only (episodes, outcomes, snapshot versions,
quarantine) and, when an MQTT monitor identity is given, the robots' retained status messages
(the policy version each runs, pending version, uploads waiting). Success by task and policy
version comes from the episodes' outcomes and the versions recorded in their metadata.
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lwd_learner.coordinator.snapshot_store import SnapshotReader, SqliteSnapshotReader
from lwd_learner.stop_signals import interrupt_on_stop_signals

StatusSource = Callable[[], dict[str, dict[str, Any]]]  # robot id -> retained status JSON


def fleet_status(snapshots: SnapshotReader, robot_status: StatusSource | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data (also the /api/status body)."""
    version = snapshots.current_version()
    records = snapshots.get_snapshot(version) if version else []
    infos = {i.version: i for i in snapshots.list_snapshots()}
    robots: dict[str, dict[str, Any]] = {}
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies = []
    for rec in records:
        r = robots.setdefault(rec.robot_id, {"episodes": 0, "successes": 0, "steps": 0})
        r["episodes"] += 1
        r["successes"] += rec.outcome == "success"
        r["steps"] += rec.num_steps
        by_task[rec.task][f"v{rec.policy_version}"].append(float(rec.outcome == "success"))
        info = infos.get(rec.version or 0)
        if info is not None:
            latencies.append(max(0.0, (info.created_at_ns - rec.committed_at_ns) / 1e9))
    for robot, row in (robot_status() if robot_status else {}).items():
        entry = robots.setdefault(robot, {"episodes": 0, "successes": 0, "steps": 0})
        entry["active_version"] = row.get("active_version")
        entry["pending_version"] = row.get("pending_version")
        entry["state"] = row.get("state")
        entry["pending_uploads"] = row.get("pending_uploads")
    for row in robots.values():
        row["success_rate"] = row["successes"] / row["episodes"] if row["episodes"] else None
    quarantined = [
        {"episode_id": q.episode_id, "robot_id": q.robot_id, "reason": q.reason} for q in snapshots.quarantined()
    ]
    return {
        "snapshot_version": version,
        "episodes": len(records),
        "robots": dict(sorted(robots.items())),
        "success_by_task_version": {
            task: {v: {"episodes": len(xs), "success_rate": statistics.fmean(xs)} for v, xs in sorted(vs.items())}
            for task, vs in sorted(by_task.items())
        },
        "ingest_latency_s": {
            "p50": statistics.median(latencies) if latencies else None,
            "max": max(latencies) if latencies else None,
            "n": len(latencies),
        },
        "quarantined": quarantined,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def render_html(status: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr data-robot="{_fmt(rid)}"><td>{_fmt(rid)}</td><td class="active">{_fmt(r.get("active_version"))}</td>'
        f"<td>{_fmt(r.get('pending_version'))}</td><td class='episodes'>{r['episodes']}</td>"
        f"<td>{_fmt(r['success_rate'])}</td><td>{_fmt(r.get('pending_uploads'))}</td></tr>"
        for rid, r in status["robots"].items()
    )
    tasks = "".join(
        f"<tr><td>{_fmt(task)}</td><td>{_fmt(v)}</td><td>{c['episodes']}</td><td>{_fmt(c['success_rate'])}</td></tr>"
        for task, versions in status["success_by_task_version"].items()
        for v, c in versions.items()
    )
    quarantine = "".join(
        f"<li><code>{_fmt(q['episode_id'])}</code> ({_fmt(q['robot_id'])}): {_fmt(q['reason'])}</li>"
        for q in status["quarantined"]
    )
    lat = status["ingest_latency_s"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>LWD fleet status</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body>
<h1>LWD fleet status</h1>
<p>snapshot version <b id="snapshot">{status["snapshot_version"]}</b> &middot;
episodes <b id="episodes">{status["episodes"]}</b> &middot;
ingest latency p50 <b id="latency">{_fmt(lat["p50"])}</b> s (n={lat["n"]})</p>
<h2>Robots</h2>
<table id="robots"><tr><th>robot</th><th>active policy</th><th>pending</th><th>episodes</th><th>success</th>
<th>pending uploads</th></tr>{rows}</table>
<h2>Success by task and policy version</h2>
<table id="tasks"><tr><th>task</th><th>version</th><th>episodes</th><th>success</th></tr>{tasks}</table>
<h2>Quarantined episodes (<span id="quarantined">{len(status["quarantined"])}</span>)</h2>
<ul>{quarantine}</ul>
</body></html>
"""


@dataclass
class StatusPage:
    """A read-only HTTP server over a status function; start() returns at once, stop() joins."""

    status: Callable[[], dict[str, Any]]
    host: str = "127.0.0.1"
    port: int = 0

    def start(self) -> StatusPage:
        page = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, render_html(page.status()).encode(), "text/html; charset=utf-8")
                elif path == "/api/status":
                    self._send(200, json.dumps(page.status()).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            do_HEAD = do_GET  # noqa: N815

            def _refuse(self) -> None:
                self._send(405, b"read-only status page\n", "text/plain")

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="lwd-status-page", daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lwd status-page", description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="the Coordinator's SQLite snapshot store (read-only)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)
    reader = SqliteSnapshotReader(args.db)
    interrupt_on_stop_signals()
    page = StatusPage(lambda: fleet_status(reader), args.host, args.port).start()
    print(f"fleet status page at {page.url} (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        page.stop()
    return 0
