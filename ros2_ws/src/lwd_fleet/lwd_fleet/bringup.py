"""`lwd-robot --params robot.yaml [--namespace ns] [--driver sim|none]`: bring up one robot without ROS launch.

``ros2 launch lwd_fleet robot.launch.py`` is how robots installed from the ROS apt repositories
start; ``launch``/``launch_ros`` are not on PyPI, so pip-only machines use this instead. It starts
the same nodes (ROBOT_NODES, the one declarative list; a test checks launch/robot.launch.py
against it) with the same parameter file, each as a subprocess of its console entry point::

    <executable> --ros-args -r __node:=<name> [-r __ns:=/<ns>] --params-file <robot.yaml>

Every child runs in its own process group and is asked to die with its parent (PDEATHSIG), so
a crashed bring-up leaves no orphan. SIGINT/SIGTERM stop the children like ros2 launch does:
SIGINT, then SIGTERM after ``--sigint-timeout`` seconds, then SIGKILL after ``--sigterm-timeout``;
the exit code is 0 only when every child stopped cleanly. A child that dies on its own is
reported with its exit code while the others keep running (as under ros2 launch); a child whose
NodeSpec says ``respawn`` (launch_ros ``Node(respawn=True, respawn_delay=...)``) is started again
after ``respawn_delay`` seconds and the restart is logged (``respawned <name> (pid N)``). Only
the stateless bridges respawn (uplink, policy_sync: their work survives in the spool and the
policy cache); a dead controller, recorder or driver needs a person. A stop never respawns.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

DRIVERS = ("sim", "none")


@dataclass(frozen=True)
class NodeSpec:
    """One robot node: its lwd_fleet console script, ROS node name and when it runs."""

    executable: str
    name: str
    sim_only: bool = False  # started only with --driver sim (a hardware driver is a separate package)
    respawn: bool = False  # restart it when it exits, as launch_ros Node(respawn=True)
    respawn_delay: float = 0.0  # seconds between the exit and the restart (launch_ros respawn_delay)


BRIDGE_RESPAWN_DELAY_S = 2.0  # robot.launch.py passes the same respawn_delay (a test checks)

ROBOT_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("sim_driver", "sim_driver", sim_only=True),
    NodeSpec("cameras", "cameras"),
    NodeSpec("controller", "controller"),
    NodeSpec("teleop", "teleop"),
    NodeSpec("recorder", "recorder"),
    NodeSpec("uplink", "uplink", respawn=True, respawn_delay=BRIDGE_RESPAWN_DELAY_S),
    NodeSpec("policy_sync", "policy_sync", respawn=True, respawn_delay=BRIDGE_RESPAWN_DELAY_S),
)


@dataclass(frozen=True)
class Launch:
    """What is started for one node."""

    executable: str
    name: str
    namespace: str  # "" or "/ns"
    params_file: Path
    respawn: bool = False
    respawn_delay: float = 0.0

    def argv(self, executable_path: str) -> list[str]:
        argv = [executable_path, "--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            argv += ["-r", f"__ns:={self.namespace}"]
        return [*argv, "--params-file", str(self.params_file)]


def normalize_namespace(namespace: str) -> str:
    ns = namespace.strip().strip("/")
    if not ns:
        return ""
    for part in ns.split("/"):
        if not part or not (part[0].isalpha() or part[0] == "_") or not all(c.isalnum() or c == "_" for c in part):
            raise ValueError(f"invalid ROS namespace {namespace!r}: use [A-Za-z_][A-Za-z0-9_]* segments")
    return "/" + ns


def plan(params_file: str | os.PathLike, namespace: str = "", driver: str = "sim") -> list[Launch]:
    """The nodes to start, in order, for these arguments (same as robot.launch.py's)."""
    if driver not in DRIVERS:
        raise ValueError(f"driver {driver!r} not one of {DRIVERS}")
    path = Path(params_file).expanduser().resolve()
    ns = normalize_namespace(namespace)
    return [
        Launch(n.executable, n.name, ns, path, n.respawn, n.respawn_delay)
        for n in ROBOT_NODES
        if driver == "sim" or not n.sim_only
    ]


def check_params_file(path: Path) -> None:
    """Fail early with a clear message instead of seven nodes failing one by one."""
    if not path.is_file():
        raise ValueError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"parameter file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict) for v in data.values()
    ):
        raise ValueError(f"parameter file {path}: every top-level key must hold a 'ros__parameters' mapping")


def find_executable(name: str) -> str:
    """The console script next to this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"console script {name!r} not found next to {sys.executable} or on PATH (pip install lwd_fleet)"
        )
    return found


def _die_with_parent() -> None:
    """Child side of Popen: SIGTERM this process when the bring-up process dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Bringup:
    def __init__(self, launches: list[Launch], sigint_timeout_s: float = 10.0, sigterm_timeout_s: float = 5.0):
        self.launches = launches
        self.sigint_timeout_s, self.sigterm_timeout_s = sigint_timeout_s, sigterm_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.respawns: dict[str, int] = {}  # name -> how many times it was started again
        self._by_name = {launch.name: launch for launch in launches}
        self._paths: dict[str, str] = {}
        self._stop_requested = False

    def start(self) -> None:
        self._paths = {launch.executable: find_executable(launch.executable) for launch in self.launches}
        for launch in self.launches:
            proc = self._spawn(launch)
            _say(f"started {launch.name} (pid {proc.pid}): {' '.join(proc.args)}")

    def _spawn(self, launch: Launch) -> subprocess.Popen:
        argv = launch.argv(self._paths[launch.executable])
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)
        self.procs[launch.name] = proc
        return proc

    def request_stop(self, signum: int, _frame=None) -> None:
        if not self._stop_requested:
            _say(f"{signal.Signals(signum).name}: stopping {len(self.procs)} nodes")
        self._stop_requested = True

    def run(self) -> int:
        """Supervise until a stop is requested or every child has exited; then stop the rest.

        A child with ``respawn`` is started again ``respawn_delay`` s after it exited (while no
        stop is requested); the others are reported once and left down, as under ros2 launch.
        """
        reported: set[str] = set()
        due: dict[str, float] = {}  # name -> monotonic time of its respawn
        while not self._stop_requested:
            now = time.monotonic()
            for name, proc in self.procs.items():
                if name in reported or proc.poll() is None:
                    continue
                reported.add(name)
                launch = self._by_name[name]
                if launch.respawn:
                    due[name] = now + launch.respawn_delay
                    _say(
                        f"{name} (pid {proc.pid}) exited with code {proc.returncode}; "
                        f"respawning in {launch.respawn_delay:g} s"
                    )
                else:
                    _say(f"{name} (pid {proc.pid}) exited with code {proc.returncode}")
            for name, when in list(due.items()):
                if when <= now and not self._stop_requested:
                    del due[name]
                    try:
                        proc = self._spawn(self._by_name[name])
                    except OSError as exc:  # executable gone: try again after the delay
                        due[name] = now + max(self._by_name[name].respawn_delay, 1.0)
                        _say(f"cannot respawn {name}: {exc}")
                        continue
                    reported.discard(name)
                    self.respawns[name] = self.respawns.get(name, 0) + 1
                    _say(f"respawned {name} (pid {proc.pid}), respawn {self.respawns[name]}")
            if len(reported) == len(self.procs) and not due:
                _say("every node has exited")
                return 1
            time.sleep(0.1 if due else 0.2)
        return self.stop()

    def stop(self) -> int:
        """SIGINT -> SIGTERM -> SIGKILL, each process group, with the timeouts; 0 if all exited cleanly."""
        alive = {n: p for n, p in self.procs.items() if p.poll() is None}
        early = {n: p.returncode for n, p in self.procs.items() if n not in alive}
        for sig, timeout in ((signal.SIGINT, self.sigint_timeout_s), (signal.SIGTERM, self.sigterm_timeout_s)):
            for proc in alive.values():
                _signal_group(proc, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(p.poll() is None for p in alive.values()):
                time.sleep(0.05)
            stubborn = [n for n, p in alive.items() if p.poll() is None]
            if not stubborn:
                break
            _say(f"still running after {signal.Signals(sig).name} + {timeout:.0f} s: {', '.join(stubborn)}")
        for name, proc in alive.items():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                _say(f"{name} (pid {proc.pid}) killed")
        bad = {n: p.returncode for n, p in alive.items() if p.returncode not in (0, -signal.SIGINT)}
        bad.update({n: c for n, c in early.items() if c != 0})
        for name, code in bad.items():
            _say(f"{name} ended with code {code}")
        return 0 if not bad else 1


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the child leads its own group: grandchildren get it too


def _say(text: str) -> None:
    print(f"[lwd-robot] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lwd-robot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, help="robot parameter YAML (as robot.launch.py params_file)")
    parser.add_argument("--namespace", default="", help="ROS namespace of this robot")
    parser.add_argument(
        "--driver", default="sim", choices=DRIVERS, help="'sim' or 'none' (hardware driver runs separately)"
    )
    parser.add_argument("--sigint-timeout", type=float, default=10.0, help="seconds before SIGTERM on stop")
    parser.add_argument("--sigterm-timeout", type=float, default=5.0, help="seconds before SIGKILL on stop")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    try:
        launches = plan(args.params, args.namespace, args.driver)
        check_params_file(launches[0].params_file)
        if args.dry_run:
            for launch in launches:
                print(" ".join(launch.argv(launch.executable)))
            return 0
        bringup = Bringup(launches, args.sigint_timeout, args.sigterm_timeout)
        signal.signal(signal.SIGINT, bringup.request_stop)
        signal.signal(signal.SIGTERM, bringup.request_stop)
        bringup.start()
    except (ValueError, FileNotFoundError) as exc:
        _say(f"error: {exc}")
        if "bringup" in locals():
            bringup.stop()
        return 2
    return bringup.run()


if __name__ == "__main__":
    sys.exit(main())
