"""`python -m lwd_learner.coordinator --config coordinator.json` (see runner.py)."""

from lwd_learner.coordinator.runner import main

raise SystemExit(main())
