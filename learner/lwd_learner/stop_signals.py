"""Ctrl-C and SIGTERM as KeyboardInterrupt, whatever signal disposition the process inherited.

A process started from a non-interactive shell's background job (`make demo &`, CI runners,
nohup) inherits SIGINT as *ignored*, and Python then installs no KeyboardInterrupt handler: a
Ctrl-C or `kill -INT` would be silently dropped and the fleet and services it started would keep
running. The long-running CLIs install these handlers explicitly instead of relying on the default.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_on_stop_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (call from the main thread)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_keyboard_interrupt)
