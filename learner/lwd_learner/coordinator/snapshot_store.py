"""Durable episode/snapshot state behind a small interface (SQLite here; PostgreSQL can implement it).

Snapshot semantics (paper App. D): versions are consecutive integers; version v contains every
episode whose first version is <= v, so v+1 = v's episodes + the newly verified ones and a
committed version never changes. Each episode row gets its first version exactly once, in the
same transaction that inserts the snapshot row and moves the `current` pointer: a reader sees
either the old version or the complete new one. Triggers make committed rows read-only in the
database itself, not just by convention.

Two interfaces: `SnapshotReader` is everything a learner needs (versions, a snapshot's episodes,
the delta between two versions) and nothing that writes; `SnapshotStore` adds the Coordinator's
writes. The learner usually runs in another process, or on another host, than the Coordinator:
`SqliteSnapshotReader` opens the same file read-only (SQLite WAL lets it read while the
Coordinator writes), and a PostgreSQL deployment implements both protocols with the same queries
(every statement here is plain SQL; one read = one statement, one write = one transaction).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from lwd_learner.coordinator.records import AddResult, EpisodeRecord, QuarantineRecord, RobotStats, SnapshotInfo


class SnapshotReader(Protocol):
    """Read-only view of committed snapshots: what a learner (replay reader) needs."""

    def current_version(self) -> int: ...
    def snapshot_info(self, version: int) -> SnapshotInfo: ...
    def list_snapshots(self, after: int = 0) -> list[SnapshotInfo]: ...
    def get_snapshot(self, version: int) -> list[EpisodeRecord]: ...
    def get_delta(self, after: int, upto: int) -> list[EpisodeRecord]: ...
    def quarantined(self) -> list[QuarantineRecord]: ...
    def close(self) -> None: ...


class SnapshotStore(SnapshotReader, Protocol):
    """What the Coordinator needs from its database. Every method is one transaction."""

    def add_episode(self, rec: EpisodeRecord) -> AddResult: ...
    def add_quarantine(self, q: QuarantineRecord) -> None: ...
    def drop_pending(self, episode_id: str, q: QuarantineRecord) -> None: ...
    def pending_episodes(self) -> list[EpisodeRecord]: ...
    def commit_snapshot(self, episode_ids: list[str], created_at_ns: int | None = None) -> SnapshotInfo: ...
    def unknown_keys(self, keys: list[str]) -> set[str]: ...
    def robot_stats(self) -> dict[str, RobotStats]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    version INTEGER PRIMARY KEY CHECK (version >= 1),
    parent INTEGER NOT NULL,
    num_episodes INTEGER NOT NULL,
    added INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pointer (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT OR IGNORE INTO pointer (name, version) VALUES ('current', 0);
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    robot_id TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    task TEXT NOT NULL,
    outcome TEXT NOT NULL,
    num_steps INTEGER NOT NULL,
    source TEXT NOT NULL,
    committed_at_ns INTEGER NOT NULL,
    verified_at_ns INTEGER NOT NULL,
    version INTEGER REFERENCES snapshots(version),
    policy_version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS episodes_version ON episodes(version);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL,
    topic TEXT NOT NULL,
    robot_id TEXT,
    episode_id TEXT,
    key TEXT,
    payload_head BLOB,
    received_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (robot_id TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS committed_episode_no_update BEFORE UPDATE ON episodes
    WHEN OLD.version IS NOT NULL BEGIN SELECT RAISE(ABORT, 'committed episodes are immutable'); END;
CREATE TRIGGER IF NOT EXISTS committed_episode_no_delete BEFORE DELETE ON episodes
    WHEN OLD.version IS NOT NULL BEGIN SELECT RAISE(ABORT, 'committed episodes are immutable'); END;
CREATE TRIGGER IF NOT EXISTS snapshot_no_update BEFORE UPDATE ON snapshots
    BEGIN SELECT RAISE(ABORT, 'snapshots are immutable'); END;
CREATE TRIGGER IF NOT EXISTS snapshot_no_delete BEFORE DELETE ON snapshots
    BEGIN SELECT RAISE(ABORT, 'snapshots are immutable'); END;
"""

_EP_COLS = (
    "episode_id, robot_id, key, sha256, size, task, outcome, num_steps, source, "
    "committed_at_ns, verified_at_ns, version, policy_version"
)


class _SqliteReads:
    """The read queries, shared by the Coordinator's store and the learner's read-only reader."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def current_version(self) -> int:
        with self._lock:
            return self._db.execute("SELECT version FROM pointer WHERE name = 'current'").fetchone()[0]

    def snapshot_info(self, version: int) -> SnapshotInfo:
        with self._lock:
            row = self._db.execute(
                "SELECT version, parent, num_episodes, added, created_at_ns FROM snapshots WHERE version = ?",
                (version,),
            ).fetchone()
        if row is None:
            raise KeyError(f"no snapshot version {version}")
        return SnapshotInfo(*row)

    def list_snapshots(self, after: int = 0) -> list[SnapshotInfo]:
        """Committed versions newer than `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, parent, num_episodes, added, created_at_ns FROM snapshots WHERE version > ? "
                "ORDER BY version",
                (after,),
            ).fetchall()
        return [SnapshotInfo(*r) for r in rows]

    def get_snapshot(self, version: int) -> list[EpisodeRecord]:
        self.snapshot_info(version)  # KeyError for a version that was never committed
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_EP_COLS} FROM episodes WHERE version IS NOT NULL AND version <= ? "
                "ORDER BY version, episode_id",
                (version,),
            ).fetchall()
        return [EpisodeRecord(*r) for r in rows]

    def get_delta(self, after: int, upto: int) -> list[EpisodeRecord]:
        """Episodes first committed in versions after < v <= upto (= snapshot(upto) minus snapshot(after))."""
        if not isinstance(after, int) or not isinstance(upto, int) or after < 0 or upto < after:
            raise ValueError(f"bad version range ({after!r}, {upto!r}]: need 0 <= after <= upto")
        if upto > after:
            self.snapshot_info(upto)  # KeyError for a version that was never committed
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_EP_COLS} FROM episodes WHERE version > ? AND version <= ? ORDER BY version, episode_id",
                (after, upto),
            ).fetchall()
        return [EpisodeRecord(*r) for r in rows]

    def quarantined(self) -> list[QuarantineRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, topic, robot_id, episode_id, key, payload_head, received_at_ns FROM quarantine "
                "ORDER BY id"
            ).fetchall()
        return [QuarantineRecord(*r[:5], payload_head=bytes(r[5] or b""), received_at_ns=r[6]) for r in rows]

    def robot_stats(self) -> dict[str, RobotStats]:
        stats: dict[str, RobotStats] = {}
        with self._lock:
            for robot, outcome, n, committed, steps in self._db.execute(
                "SELECT robot_id, outcome, COUNT(*), COUNT(version), SUM(num_steps) FROM episodes "
                "GROUP BY robot_id, outcome"
            ):
                s = stats.setdefault(robot, RobotStats())
                s.episodes += n
                s.committed += committed
                s.steps += steps or 0
                s.outcomes[outcome] = n
            for robot, n in self._db.execute(
                "SELECT robot_id, COUNT(*) FROM quarantine WHERE robot_id IS NOT NULL GROUP BY robot_id"
            ):
                stats.setdefault(robot, RobotStats()).quarantined = n
            for robot, n in self._db.execute("SELECT robot_id, count FROM duplicates"):
                stats.setdefault(robot, RobotStats()).duplicates = n
        return stats

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteSnapshotStore(_SqliteReads):
    """SnapshotStore on one SQLite file: WAL + synchronous=FULL, so a returned call is on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: the worker writes, tests/API read from other threads.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def _tx(self):
        return _Tx(self._db, self._lock)

    def add_episode(self, rec: EpisodeRecord) -> AddResult:
        with self._tx() as db:
            row = db.execute("SELECT sha256 FROM episodes WHERE episode_id = ?", (rec.episode_id,)).fetchone()
            if row is not None:
                if row[0] != rec.sha256:
                    return AddResult.CONFLICT
                db.execute(
                    "INSERT INTO duplicates (robot_id, count) VALUES (?, 1) "
                    "ON CONFLICT(robot_id) DO UPDATE SET count = count + 1",
                    (rec.robot_id,),
                )
                return AddResult.DUPLICATE
            db.execute(
                f"INSERT INTO episodes ({_EP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    rec.episode_id,
                    rec.robot_id,
                    rec.key,
                    rec.sha256,
                    rec.size,
                    rec.task,
                    rec.outcome,
                    rec.num_steps,
                    rec.source,
                    rec.committed_at_ns,
                    rec.verified_at_ns,
                    rec.policy_version,
                ),
            )
            return AddResult.NEW

    def add_quarantine(self, q: QuarantineRecord) -> None:
        with self._tx() as db:
            self._insert_quarantine(db, q)

    @staticmethod
    def _insert_quarantine(db: sqlite3.Connection, q: QuarantineRecord) -> None:
        db.execute(
            "INSERT INTO quarantine (reason, topic, robot_id, episode_id, key, payload_head, received_at_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (q.reason, q.topic, q.robot_id, q.episode_id, q.key, q.payload_head, q.received_at_ns or time.time_ns()),
        )

    def drop_pending(self, episode_id: str, q: QuarantineRecord) -> None:
        """Move a verified-but-uncommitted episode to quarantine (its object vanished before commit)."""
        with self._tx() as db:
            db.execute("DELETE FROM episodes WHERE episode_id = ? AND version IS NULL", (episode_id,))
            self._insert_quarantine(db, q)

    def pending_episodes(self) -> list[EpisodeRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_EP_COLS} FROM episodes WHERE version IS NULL ORDER BY verified_at_ns, episode_id"
            ).fetchall()
        return [EpisodeRecord(*r) for r in rows]

    def commit_snapshot(self, episode_ids: list[str], created_at_ns: int | None = None) -> SnapshotInfo:
        """One transaction: new snapshot row, stamp the new episodes, move the pointer."""
        if not episode_ids:
            raise ValueError("a snapshot must add at least one episode")
        created = created_at_ns or time.time_ns()
        with self._tx() as db:
            parent = db.execute("SELECT version FROM pointer WHERE name = 'current'").fetchone()[0]
            version = parent + 1
            before = db.execute("SELECT COUNT(*) FROM episodes WHERE version IS NOT NULL").fetchone()[0]
            ids = sorted(set(episode_ids))
            marks = ",".join("?" * len(ids))
            pending = db.execute(
                f"SELECT COUNT(*) FROM episodes WHERE version IS NULL AND episode_id IN ({marks})", ids
            ).fetchone()[0]
            if pending != len(ids):
                raise ValueError(f"commit of v{version}: {len(ids) - pending} of the episodes are not pending")
            added = len(ids)
            db.execute(
                "INSERT INTO snapshots (version, parent, num_episodes, added, created_at_ns) VALUES (?, ?, ?, ?, ?)",
                (version, parent, before + added, added, created),
            )
            db.execute(
                f"UPDATE episodes SET version = ? WHERE version IS NULL AND episode_id IN ({marks})", [version, *ids]
            )
            db.execute("UPDATE pointer SET version = ? WHERE name = 'current'", (version,))
        return SnapshotInfo(version, parent, before + added, added, created)

    def unknown_keys(self, keys: list[str]) -> set[str]:
        """Object keys neither recorded as an episode nor quarantined (the sweep's candidates)."""
        unknown = set(keys)
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                marks = ",".join("?" * len(part))
                for table in ("episodes", "quarantine"):
                    for (key,) in self._db.execute(f"SELECT key FROM {table} WHERE key IN ({marks})", part):
                        unknown.discard(key)
        return unknown


class SqliteSnapshotReader(_SqliteReads):
    """Read-only view of a Coordinator's SQLite file, for a learner in another process.

    Opened with `mode=ro`: any write raises. WAL mode lets it read while the Coordinator commits;
    each query is one statement, so it sees either the old or the complete new version.
    """

    def __init__(self, path: str | Path, timeout_s: float = 30.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no snapshot database at {self.path} (has the Coordinator run yet?)")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout_s)
        self._lock = threading.Lock()
        try:
            self._db.execute("SELECT version FROM pointer WHERE name = 'current'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{self.path} is not a Coordinator snapshot database: {exc}") from exc


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT under the connection lock; ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
