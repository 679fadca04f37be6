"""Robot-side control core: pure Python (numpy only, no rclpy), so it is unit- and property-testable.

Modules, one job each:
  * safety       -- SafetyFilter: the last gate before every joint command (limits, rate, e-stop, hold)
  * chunking     -- ChunkExecutor: executes H-step action chunks at 30 Hz, schedules inference, blends
  * watchdog     -- StalenessWatchdog: observation / inference freshness -> HOLD with a reason
  * camera_sync  -- CameraSynchronizer: latest time-consistent (head, left_wrist, right_wrist) triple
  * loop         -- ControlLoop: per-tick arbitration e-stop > human > watchdog > policy -> safe command

The ROS 2 nodes wrap these; nothing here starts threads or touches the network.
"""

from lwd_fleet.control.camera_sync import CameraSynchronizer, SyncConfig, SyncResult
from lwd_fleet.control.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, ExecutorStatus, ExecutorStep
from lwd_fleet.control.loop import ControlLoop, HumanCommand, HumanCommandError, LoopConfig, Mode, Source, TickOutput
from lwd_fleet.control.safety import SafetyConfig, SafetyFilter, SafetyFlag, SafetyResult
from lwd_fleet.control.watchdog import StalenessWatchdog, WatchdogConfig, WatchdogStatus

__all__ = [
    "ActionChunk",
    "CameraSynchronizer",
    "ChunkExecutor",
    "ControlLoop",
    "ExecutorConfig",
    "ExecutorStatus",
    "ExecutorStep",
    "HumanCommand",
    "HumanCommandError",
    "LoopConfig",
    "Mode",
    "SafetyConfig",
    "SafetyFilter",
    "SafetyFlag",
    "SafetyResult",
    "Source",
    "StalenessWatchdog",
    "SyncConfig",
    "SyncResult",
    "TickOutput",
    "WatchdogConfig",
    "WatchdogStatus",
]
