"""Run the lwd_sim speed benchmark and write bench/results.json next to this script."""

from __future__ import annotations

import sys
from pathlib import Path

from lwd_sim.bench import main

if __name__ == "__main__":
    main(["--out", str(Path(__file__).with_name("results.json")), *sys.argv[1:]])
