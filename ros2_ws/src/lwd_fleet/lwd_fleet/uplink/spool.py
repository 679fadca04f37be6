"""The robot's spool directory: which episode files are complete, what is already uploaded, how full it is.

The recorder writes `<id>.mcap.partial` and renames to `<id>.mcap`; only `.mcap` files are ours.
After a successful upload we write `<id>.mcap.uploaded.json` (the announcement, plus the file's
size and mtime) atomically next to it, so a restart re-announces without re-uploading. The
sidecar is ignored if the file changed since. Unreadable episodes move to `rejected/` (kept for
a human, still counted against the spool limit) instead of being retried forever.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lwd_protocol.announce import AnnouncementError, EpisodeAnnouncement
from lwd_protocol.episode import EPISODE_SUFFIX

SIDECAR_SUFFIX = ".uploaded.json"
REJECTED_DIR = "rejected"


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    episode_id: str
    size: int
    mtime_ns: int

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)


class Spool:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> list[SpoolEntry]:
        """Complete episodes, oldest first (ids are time-sortable; mtime breaks ties)."""
        entries = []
        for p in self.dir.glob("*" + EPISODE_SUFFIX):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue  # sent and deleted under us
            entries.append(SpoolEntry(p, p.name[: -len(EPISODE_SUFFIX)], st.st_size, st.st_mtime_ns))
        return sorted(entries, key=lambda e: (e.mtime_ns, e.episode_id))

    def total_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # sent and deleted under us
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    def load_uploaded(self, entry: SpoolEntry) -> EpisodeAnnouncement | None:
        """The announcement saved after upload, if it still describes this exact file."""
        try:
            data = json.loads(entry.sidecar.read_text())
            if data["size"] != entry.size or data["mtime_ns"] != entry.mtime_ns:
                return None
            return EpisodeAnnouncement.from_json(json.dumps(data["announcement"]))
        except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError, AnnouncementError):
            return None

    def mark_uploaded(self, entry: SpoolEntry, ann: EpisodeAnnouncement) -> None:
        tmp = entry.sidecar.with_name(entry.sidecar.name + ".tmp")
        body = {"size": entry.size, "mtime_ns": entry.mtime_ns, "announcement": json.loads(ann.to_json())}
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry.sidecar)

    def remove(self, entry: SpoolEntry) -> None:
        """Delete the episode first, then its sidecar: a crash in between leaves only a harmless sidecar."""
        entry.path.unlink(missing_ok=True)
        entry.sidecar.unlink(missing_ok=True)

    def reject(self, entry: SpoolEntry) -> Path:
        target = self.dir / REJECTED_DIR
        target.mkdir(exist_ok=True)
        dest = target / entry.path.name
        os.replace(entry.path, dest)
        entry.sidecar.unlink(missing_ok=True)
        return dest

    def sweep_orphans(self) -> None:
        """Sidecars whose episode is gone (crash between the two unlinks)."""
        for side in self.dir.glob("*" + EPISODE_SUFFIX + SIDECAR_SUFFIX):
            if not side.with_name(side.name[: -len(SIDECAR_SUFFIX)]).exists():
                side.unlink(missing_ok=True)
