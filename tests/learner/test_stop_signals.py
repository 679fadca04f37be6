"""interrupt_on_stop_signals: Ctrl-C/SIGTERM reach a CLI even when it inherited SIGINT as ignored."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import os, signal, sys, time
from lwd_learner.stop_signals import interrupt_on_stop_signals
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "the test must start this with SIGINT ignored"
if sys.argv[1] == "install":
    interrupt_on_stop_signals()
try:
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(0.2)  # a delivered, handled signal raises before this returns
    print("still running")
except KeyboardInterrupt as exc:
    print(f"interrupted by {exc}")
"""


def _run_with_sigint_ignored(mode: str, sig: str) -> str:
    argv = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", sys.executable, "-c", PROGRAM, mode, sig]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_inherited_ignored_sigint_is_dropped_without_the_handlers():
    assert _run_with_sigint_ignored("default", "SIGINT") == "still running"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_the_handlers_turn_each_stop_signal_into_keyboard_interrupt(sig):
    assert _run_with_sigint_ignored("install", sig) == f"interrupted by {sig}"
