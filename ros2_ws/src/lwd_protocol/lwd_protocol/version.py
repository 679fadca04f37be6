"""Version numbers of the shared contracts.

PROTOCOL_VERSION is carried in MQTT topic roots and in every episode and manifest; a reader
refuses a major version it does not know instead of misreading it.
"""

PROTOCOL_VERSION = 1
EPISODE_FORMAT_VERSION = 1
# 2: relative (delta) joint actions and per-chunk-step action statistics; a v1 reader would
# misread them as absolute targets, so it must refuse them.
MANIFEST_FORMAT_VERSION = 2


class ProtocolVersionError(ValueError):
    """A peer speaks a contract version this code cannot read."""


def check_version(kind: str, found: int, supported: int) -> None:
    """Raise ProtocolVersionError naming the contract when found != supported."""
    if found != supported:
        raise ProtocolVersionError(f"{kind} format version {found} is not supported (this build reads {supported})")
