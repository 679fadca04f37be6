"""Robot-side policy sync: signed orders in, verified and validated policy folders out (no rclpy here).

  * sync    -- PolicySync / PolicySyncConfig: MQTT orders -> download -> verify -> engine check -> ready
  * fetch   -- size-capped, hash-checked downloads; ArtifactRejectedError vs StoreUnavailableError
  * engine  -- build the configured backend's engine and validate it on the reference I/O
  * state   -- the accepted version and order seqs, persisted atomically for replay protection

The ROS 2 wrapper is lwd_fleet.nodes.policy_sync_node.
"""

from lwd_fleet.policy_sync.engine import EngineCheck, EngineSettings, build_and_validate
from lwd_fleet.policy_sync.fetch import ArtifactRejectedError, StoreUnavailableError
from lwd_fleet.policy_sync.state import SyncState
from lwd_fleet.policy_sync.sync import PolicySync, PolicySyncConfig, SyncTiming

__all__ = [
    "ArtifactRejectedError",
    "EngineCheck",
    "EngineSettings",
    "PolicySync",
    "PolicySyncConfig",
    "StoreUnavailableError",
    "SyncState",
    "SyncTiming",
    "build_and_validate",
]
