"""What policy sync must remember across restarts to refuse replays: the accepted version and order seqs.

Replay rule, per topic ("fleet" and this robot's "robot" pin): an order is acceptable only if its
``seq`` is above the highest validly signed seq ever seen on that topic, or equal to it for the
very same order while it is still retained there (a re-delivery after a reconnect or a restart).
Once a topic is cleared (a pin removed), even that last order needs a newer seq: a captured pin
replayed after an unpin is refused. Seqs are recorded when an order is *seen*, not only when it
is accepted, so an old fleet order replayed while the robot was pinned is refused too.

Stored as a small JSON file in the policy cache, written atomically (temp + fsync + rename), so a
power cut leaves either the old or the new state. Losing it must not open the door to a
rollback: an unreadable file is set aside and the state restarts from the highest version in the
cache, which still refuses every "publish" order below it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "sync_state.json"
SOURCES = ("fleet", "robot")


@dataclass
class SyncState:
    current_version: int = 0  # last version validated and handed to the controller (0 = none)
    current_manifest_sha256: str = ""
    seen_seq: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    seen_sha: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SOURCES, ""))
    cleared: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SOURCES, False))

    def observe(self, source: str, seq: int, manifest_sha256: str) -> bool:
        """Record a validly signed order seen on `source`; True if that raised the floor."""
        if seq > self.seen_seq[source]:
            self.seen_seq[source], self.seen_sha[source], self.cleared[source] = seq, manifest_sha256, False
            return True
        return False

    def clear(self, source: str) -> bool:
        changed = not self.cleared[source]
        self.cleared[source] = True
        return changed

    def replay_problem(self, source: str, seq: int, manifest_sha256: str) -> str | None:
        """None if an order with this seq may still be acted on, else why it is a replay."""
        floor = self.seen_seq[source]
        if seq > floor:
            return None
        if seq < floor:
            return f"replayed order refused: seq {seq} is older than the last {source} order seen (seq {floor})"
        if manifest_sha256 != self.seen_sha[source]:
            return f"order seq {seq} was already used for a different manifest"
        if self.cleared[source]:
            return f"replayed order refused: seq {seq} is the {source} order that was withdrawn since"
        return None

    def accept(self, version: int, manifest_sha256: str) -> None:
        self.current_version = version
        self.current_manifest_sha256 = manifest_sha256

    def save(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=cache_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(self), fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, cache_dir / STATE_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, cache_dir: Path, cached_versions: list[int]) -> SyncState:
        path = cache_dir / STATE_FILE
        if not path.exists():
            return cls(current_version=max(cached_versions, default=0))
        try:
            data = json.loads(path.read_text())
            state = cls(
                current_version=_nonneg(data["current_version"]),
                current_manifest_sha256=str(data["current_manifest_sha256"]),
                seen_seq={s: _nonneg(data["seen_seq"][s]) for s in SOURCES},
                seen_sha={s: str(data["seen_sha"][s]) for s in SOURCES},
                cleared={s: bool(data["cleared"][s]) for s in SOURCES},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(f"{STATE_FILE}.corrupt-{time.time_ns()}")
            os.replace(path, aside)
            log.error("policy sync state %s unreadable (%s); moved to %s", path, exc, aside)
            return cls(current_version=max(cached_versions, default=0))
        return state


def _nonneg(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value
