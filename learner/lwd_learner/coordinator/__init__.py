"""Cloud-side Coordinator: verifies announced episodes and commits versioned snapshots (paper App. D)."""

from lwd_learner.coordinator.records import AddResult, EpisodeRecord, QuarantineRecord, RobotStats, SnapshotInfo
from lwd_learner.coordinator.service import Coordinator, CoordinatorConfig, CoordinatorCounters
from lwd_learner.coordinator.snapshot_store import (
    SnapshotReader,
    SnapshotStore,
    SqliteSnapshotReader,
    SqliteSnapshotStore,
)
from lwd_learner.coordinator.verifier import EpisodeVerifier, Quarantine, TransientError, VerifierConfig

__all__ = [
    "AddResult",
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorCounters",
    "EpisodeRecord",
    "EpisodeVerifier",
    "Quarantine",
    "QuarantineRecord",
    "RobotStats",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStore",
    "SqliteSnapshotReader",
    "SqliteSnapshotStore",
    "TransientError",
    "VerifierConfig",
]
