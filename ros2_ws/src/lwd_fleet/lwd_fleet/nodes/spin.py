"""One way every robot node runs: construct, spin on a SingleThreadedExecutor, clean up, exit codes.

SingleThreadedExecutor because MultiThreadedExecutor stalls 30 Hz timers here (env-notes). A
configuration error while constructing the node (bad parameter, missing device or secret) exits
with status 2 and one clear line, so `lwd-robot` / `ros2 launch` report it instead of a traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

CONFIG_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)
SHUTDOWN_GRACE_S = 1.0


def _context_goes_down(node: Node, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while node.context.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_node(
    make: Callable[[], Node],
    cleanup: Callable[[Node], None],
    args: list[str] | None = None,
    config_errors: tuple[type[BaseException], ...] = CONFIG_ERRORS,
) -> None:
    """rclpy.init -> make() -> spin until Ctrl-C/shutdown -> cleanup(node) -> destroy -> shutdown."""
    rclpy.init(args=args)
    try:
        node = make()
    except config_errors as exc:
        print(f"[{getattr(make, '__name__', 'node')}] error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # SIGINT/SIGTERM shut the context down while the executor was taking a message (rclpy then
        # fails in take_message): that is the requested stop, not a crash; anything else still raises.
        # The take can fail a moment before the signal handler marks the context down: give it that.
        if not _context_goes_down(node, SHUTDOWN_GRACE_S):
            raise
    finally:
        cleanup(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
