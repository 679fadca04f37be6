"""`lwd` command line: one entry point for the cloud-side programs.

Subcommands are looked up lazily so `lwd --help` stays fast and a missing optional part
(e.g. no JAX on an admin laptop) only fails the subcommand that needs it.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with a main(argv) function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lwd_learner.demo", "run the LWD loop slice on this machine (127.0.0.1 only)"),
    "flywheel": ("lwd_learner.flywheel.run", "the whole loop: services, ROS 2 sim fleet, learner (make demo)"),
    "learner": (
        "lwd_learner.chaos.learner_proc",
        "kill-safe learner: follow Coordinator snapshots, train, checkpoint, publish (--config FILE)",
    ),
    "chaos": ("lwd_learner.chaos.run", "kill -9 services, learner and uplinks under the sim fleet; check invariants"),
    "coordinator": ("lwd_learner.coordinator.runner", "run the Coordinator service (--config FILE)"),
    "status-page": ("lwd_learner.status_page", "serve the read-only fleet status web page"),
    "bench": ("lwd_learner.bench_learning", "benchmarks: `lwd bench learning --profile quick|cpu`"),
    "admin": ("lwd_learner.admin", "push, roll back, list policies; show fleet status"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lwd <command> [args]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<14} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lwd: unknown command {name!r}; try `lwd --help`", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
