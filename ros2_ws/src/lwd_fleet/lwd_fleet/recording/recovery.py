"""Start-up recovery of episodes a crash left as ``<id>.mcap.partial`` in the spool.

A partial file holds the start record and every chunk that reached the disk, then stops
mid-record. It is read sequentially (CRCs checked) up to the first damaged record; the longest
run of steps 0..K-1 that has an action, a joint state, every recorded camera and (in sim) the
sim state is rebuilt into a fresh episode whose end record says ``recovered: true``, outcome
``unknown`` and a note with what was kept and dropped. The rebuilt file is validated with
read_episode before it is renamed into the spool, so the uplink only ever sees complete,
labelled episodes. A partial with no start record or no whole step is moved to
``quarantine/`` with a ``.reason.txt`` beside it: kept for a human, never uploaded, never
silently deleted.

Crash-safe itself: the partial is first moved to ``recovery/<id>.mcap.crashed`` (one rename),
the rebuild happens inside ``recovery/``, and the crashed copy is deleted only after the rebuilt
episode is in the spool. A crash at any point is redone at the next start.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory

from lwd_protocol.episode import (
    END_RECORD,
    EPISODE_SUFFIX,
    PARTIAL_SUFFIX,
    START_RECORD,
    ActionSource,
    EpisodeEnd,
    EpisodeStart,
    EpisodeTopics,
    Outcome,
)
from lwd_protocol.episode_io import EpisodeFormatError, EpisodeWriter, read_episode

RECOVERY_DIR = "recovery"
QUARANTINE_DIR = "quarantine"
CRASHED_SUFFIX = ".crashed"
REASON_SUFFIX = ".reason.txt"


@dataclass(frozen=True)
class RecoveryResult:
    episode_id: str
    path: Path  # the committed episode, or the quarantined file
    recovered: bool  # False: quarantined
    kept_steps: int
    detail: str


@dataclass
class _Salvage:
    start_record: dict[str, str] | None
    has_end: bool
    schemas: dict[int, Schema]
    channels: dict[int, Channel]
    messages: list[Message]
    stopped_at: str  # why reading stopped ('' = reached the end cleanly)


def recover_spool(spool_dir: Path, log: Callable[[str, str], None] | None = None) -> list[RecoveryResult]:
    """Recover every crashed episode in spool_dir; return what happened to each."""
    log = log or (lambda level, text: None)
    spool = Path(spool_dir)
    work = spool / RECOVERY_DIR
    results = []
    # 1. a recovery interrupted by a crash: redo it from the crashed copy
    if work.is_dir():
        for crashed in sorted(work.glob("*" + EPISODE_SUFFIX + CRASHED_SUFFIX)):
            eid = crashed.name[: -len(EPISODE_SUFFIX + CRASHED_SUFFIX)]
            for leftover in (work / (eid + EPISODE_SUFFIX), work / (eid + EPISODE_SUFFIX + PARTIAL_SUFFIX)):
                leftover.unlink(missing_ok=True)
            if (spool / (eid + EPISODE_SUFFIX)).exists():  # crashed after the final rename
                crashed.unlink()
                continue
            results.append(_recover_one(spool, crashed, eid, log))
    # 2. partial files left by the recorder
    for partial in sorted(spool.glob("*" + EPISODE_SUFFIX + PARTIAL_SUFFIX)):
        eid = partial.name[: -len(EPISODE_SUFFIX + PARTIAL_SUFFIX)]
        if (spool / (eid + EPISODE_SUFFIX)).exists():
            results.append(_quarantine(spool, partial, eid, "a committed episode with the same id exists", 0, log))
            continue
        work.mkdir(exist_ok=True)
        crashed = work / (eid + EPISODE_SUFFIX + CRASHED_SUFFIX)
        os.replace(partial, crashed)
        _fsync_dir(spool)
        results.append(_recover_one(spool, crashed, eid, log))
    return results


def _recover_one(spool: Path, crashed: Path, eid: str, log: Callable[[str, str], None]) -> RecoveryResult:
    work = crashed.parent
    salvage = _read_salvage(crashed)
    if salvage.start_record is None:
        return _quarantine(spool, crashed, eid, f"no readable '{START_RECORD}' record ({salvage.stopped_at})", 0, log)
    try:
        start = EpisodeStart.from_record(salvage.start_record)
    except (ValueError, KeyError, TypeError) as exc:
        return _quarantine(spool, crashed, eid, f"bad '{START_RECORD}' record: {exc}", 0, log)

    if salvage.has_end and not salvage.stopped_at:  # complete file, crash hit between close and rename
        try:
            read_episode(crashed)
            final = spool / (eid + EPISODE_SUFFIX)
            os.replace(crashed, final)
            _fsync_dir(spool)
            log("warn", f"episode {eid} was complete but not renamed: committed as is")
            return RecoveryResult(eid, final, True, -1, "complete file committed")
        except EpisodeFormatError:
            pass  # fall through to a rebuild

    keep, dropped, topics_by_channel = _whole_steps(salvage, start)
    if keep == 0:
        why = f"no complete step (action + joint state + cameras) survived; read stopped: {salvage.stopped_at or 'end'}"
        return _quarantine(spool, crashed, eid, why, 0, log)

    end = _end_record(salvage, keep, dropped, topics_by_channel)
    rebuilt = work / (eid + EPISODE_SUFFIX)
    try:
        writer = EpisodeWriter(rebuilt, start)
        for msg in salvage.messages:
            topic = topics_by_channel[msg.channel_id]
            if msg.sequence < keep and topic is not None:
                schema = salvage.schemas[salvage.channels[msg.channel_id].schema_id]
                writer.write_raw(topic, schema.name, msg.data, msg.sequence, msg.log_time)
        writer.close(end)
        read_episode(rebuilt)  # never commit something the learner cannot read
    except (EpisodeFormatError, ValueError, KeyError) as exc:
        rebuilt.unlink(missing_ok=True)
        return _quarantine(spool, crashed, eid, f"rebuilt episode failed validation: {exc}", keep, log)
    final = spool / (eid + EPISODE_SUFFIX)
    os.replace(rebuilt, final)
    _fsync_dir(spool)
    crashed.unlink()
    log("warn", f"recovered crashed episode {eid}: {end.note}")
    return RecoveryResult(eid, final, True, keep, end.note)


def _read_salvage(path: Path) -> _Salvage:
    s = _Salvage(None, False, {}, {}, [], "")
    with open(path, "rb") as f:
        try:
            for record in StreamReader(f, validate_crcs=True).records:
                if isinstance(record, Schema):
                    s.schemas[record.id] = record
                elif isinstance(record, Channel):
                    s.channels[record.id] = record
                elif isinstance(record, Message):
                    s.messages.append(record)
                elif isinstance(record, Metadata):
                    if record.name == START_RECORD:
                        s.start_record = dict(record.metadata)
                    elif record.name == END_RECORD:
                        s.has_end = True
        except Exception as exc:  # truncated or damaged tail: keep everything before it
            s.stopped_at = f"{type(exc).__name__} at byte {f.tell()} of {os.path.getsize(path)}"
    return s


def _whole_steps(salvage: _Salvage, start: EpisodeStart) -> tuple[int, int, dict[int, str | None]]:
    """K = number of leading steps 0..K-1 present on every per-tick topic of the file."""
    per_tick = {EpisodeTopics.ACTION, EpisodeTopics.JOINT_STATE, EpisodeTopics.SIM_STATE}
    per_tick |= {EpisodeTopics.image(c) for c in start.cameras}
    topics_by_channel: dict[int, str | None] = {}
    for cid, ch in salvage.channels.items():
        known = ch.schema_id in salvage.schemas
        topics_by_channel[cid] = ch.topic if known else None
    steps: dict[str, set[int]] = defaultdict(set)
    for msg in salvage.messages:
        topic = topics_by_channel.get(msg.channel_id)
        if topic in per_tick:
            steps[topic].add(msg.sequence)
    if EpisodeTopics.ACTION not in steps or EpisodeTopics.JOINT_STATE not in steps:
        return 0, len(salvage.messages), topics_by_channel
    keep = 0
    while all(keep in s for s in steps.values()):
        keep += 1
    for msg in salvage.messages:  # channels of unknown schema cannot be rewritten: drop them
        topics_by_channel.setdefault(msg.channel_id, None)
    dropped = sum(1 for m in salvage.messages if m.sequence >= keep or topics_by_channel[m.channel_id] is None)
    return keep, dropped, topics_by_channel


def _end_record(salvage: _Salvage, keep: int, dropped: int, topics_by_channel: dict[int, str | None]) -> EpisodeEnd:
    decoders = DecoderFactory()
    actions: dict[int, object] = {}
    last_sim = None
    for msg in salvage.messages:
        topic = topics_by_channel.get(msg.channel_id)
        if msg.sequence >= keep or topic not in (EpisodeTopics.ACTION, EpisodeTopics.SIM_STATE):
            continue
        schema = salvage.schemas[salvage.channels[msg.channel_id].schema_id]
        decoded = decoders.decoder_for("cdr", schema)(msg.data)
        if topic == EpisodeTopics.ACTION:
            actions[msg.sequence] = (decoded, msg.log_time)
        elif last_sim is None or msg.sequence >= last_sim[0]:
            last_sim = (msg.sequence, decoded)
    sources = [int(actions[t][0].source) for t in range(keep)]
    human = [s == ActionSource.HUMAN for s in sources]
    versions = sorted(
        {int(actions[t][0].policy_version) for t in range(keep) if sources[t] == ActionSource.POLICY} - {0}
    )
    note = f"recovered after a crash: kept {keep} whole steps, dropped {dropped} trailing messages"
    if salvage.stopped_at:
        note += f"; file ended with {salvage.stopped_at}"
    return EpisodeEnd(
        outcome=Outcome.UNKNOWN,
        num_steps=keep,
        num_intervention_steps=sum(human),
        num_interventions=sum(1 for t in range(keep) if human[t] and (t == 0 or not human[t - 1])),
        subtasks_done=int(last_sim[1].subtask_index) if last_sim else 0,
        num_subtasks=int(last_sim[1].num_subtasks) if last_sim else 0,
        ended_at_ns=int(actions[keep - 1][1]),
        policy_versions=tuple(versions),
        recovered=True,
        note=note,
    )


def _quarantine(
    spool: Path, src: Path, eid: str, reason: str, kept: int, log: Callable[[str, str], None]
) -> RecoveryResult:
    qdir = spool / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    dest = qdir / (eid + EPISODE_SUFFIX + PARTIAL_SUFFIX)
    os.replace(src, dest)
    (qdir / (eid + REASON_SUFFIX)).write_text(reason + "\n")
    _fsync_dir(qdir)
    log("error", f"crashed episode {eid} quarantined to {dest}: {reason}")
    return RecoveryResult(eid, dest, False, kept, reason)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
