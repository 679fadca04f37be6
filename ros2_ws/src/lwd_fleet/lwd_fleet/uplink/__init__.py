"""Robot-side episode uplink (plain Python: no rclpy, no jax)."""

from lwd_fleet.uplink.spool import Spool, SpoolEntry
from lwd_fleet.uplink.uplink import EpisodeUplink, SpoolFullError, UplinkConfig, UplinkCounters

__all__ = ["EpisodeUplink", "Spool", "SpoolEntry", "SpoolFullError", "UplinkConfig", "UplinkCounters"]
