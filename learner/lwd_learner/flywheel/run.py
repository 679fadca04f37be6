"""`lwd flywheel [--quick]` (what `make demo` runs): the whole LWD loop on this machine, 127.0.0.1 only.

Starts mosquitto, SeaweedFS and the Coordinator with per-party identities, brings up a fleet of
simulated ROS 2 robots (each the full robot node set via `lwd-robot`, the sim's scripted expert
as the teleoperator), trains SFT then offline DIVL+QAM, publishes the signed policy, and runs
online rounds in which the fleet deploys it, uploads episodes, the learner trains on mixed
replay and the robots hot-swap each newer version at an episode boundary. A live view shows the
progress; at the end a report directory is written. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.live import Live

from lwd_learner.coordinator.snapshot_store import SqliteSnapshotReader
from lwd_learner.flywheel.fleet import FleetConfig, RosFleet, robot_ids
from lwd_learner.flywheel.learner_loop import FlywheelLearner, LearnerPlan
from lwd_learner.flywheel.progress import render
from lwd_learner.flywheel.report import write_report
from lwd_learner.flywheel.stack import CloudStack
from lwd_learner.status_page import StatusPage, fleet_status
from lwd_learner.stop_signals import interrupt_on_stop_signals

QUICK = (
    FleetConfig(robots=2, tasks=("restocking",), max_episode_steps=900, takeover_stall_s=4.0),
    LearnerPlan(
        tasks=("restocking",),
        offline_episodes_per_task=6,
        hidden=128,
        batch_size=64,
        sft_updates=300,
        offline_updates=100,
        online_rounds=1,
        episodes_per_round=2,
        updates_per_round=50,
        round_timeout_s=150.0,
    ),
)
DEFAULT = (FleetConfig(), LearnerPlan())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lwd flywheel", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 robots, 1 task, 1 online round (< 5 min)")
    ap.add_argument("--robots", type=int, help="fleet size (default 4; quick 2)")
    ap.add_argument("--rounds", type=int, help="online rounds")
    ap.add_argument("--workdir", type=Path, help="where services, robots and the report live (default: a temp dir)")
    ap.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    args = ap.parse_args(argv)
    fleet_cfg, plan = QUICK if args.quick else DEFAULT
    if args.robots:
        fleet_cfg = replace(fleet_cfg, robots=args.robots)
    if args.rounds:
        plan = replace(plan, online_rounds=args.rounds)
    plan = replace(plan, tasks=fleet_cfg.tasks)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lwd-flywheel-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    console.print(f"[bold]LWD flywheel[/] workdir {workdir}")
    interrupt_on_stop_signals()

    started = time.monotonic()
    stack = CloudStack(workdir, robot_ids(fleet_cfg.robots))
    fleet = RosFleet(fleet_cfg, stack, workdir)
    learner = FlywheelLearner(plan, stack, workdir, say=lambda m: console.log(m))
    interrupted = False
    page: StatusPage | None = None
    try:
        stack.start()
        console.log(f"cloud stack up: mqtt {stack.broker.port}, s3 {stack.store.endpoint}")
        fleet.start()
        console.log(f"fleet up: {', '.join(fleet.ids)} (logs under {workdir / 'robots'})")
        snapshots = SqliteSnapshotReader(stack.coordinator_db)

        def robot_status() -> dict[str, dict]:  # policy sync's retained report + the robot's spool
            spools = fleet.pending_uploads()
            return {r: {**learner.progress.robot_status.get(r, {}), "pending_uploads": spools[r]} for r in fleet.ids}

        page = StatusPage(lambda: fleet_status(snapshots, robot_status)).start()
        console.log(f"fleet status page: {page.url}")
        if args.no_live:
            learner.run()
        else:
            with Live(get_renderable=lambda: render(learner.progress, stack, fleet, started), refresh_per_second=1):
                learner.run()
    except KeyboardInterrupt:
        interrupted = True
        learner.stop_event.set()
        console.log("interrupted: stopping the fleet and the services")
    finally:
        if page is not None:
            page.stop()
        fleet.stop()
        stack.stop()
    seconds = time.monotonic() - started
    extra = {
        "robots": fleet_cfg.robots,
        "tasks": list(fleet_cfg.tasks),
        "seconds": seconds,
        "interrupted": interrupted,
        "fleet": asdict(fleet_cfg),
        "plan": asdict(plan),
    }
    traces = {} if interrupted else learner.value_traces()
    report = write_report(workdir / "report", learner.progress, extra, traces)
    console.print(f"[bold]report:[/] {report}")
    console.print(
        json.dumps({"published": len(learner.progress.published), "episodes": len(learner.progress.episodes)})
    )
    return 130 if interrupted else 0
