"""EpisodeAnnouncement: round trip and a strict parser that names the bad field."""

from __future__ import annotations

import json

import pytest

from lwd_protocol.announce import MAX_ANNOUNCEMENT_BYTES, AnnouncementError, EpisodeAnnouncement
from lwd_protocol.store import episode_key


def _good() -> dict:
    return {
        "v": 1,
        "episode_id": "robot_01-20260101T000000-abcd0123",
        "robot_id": "robot_01",
        "key": episode_key("robot_01", "robot_01-20260101T000000-abcd0123"),
        "sha256": "ab" * 32,
        "size": 123,
        "task": "cube_single",
        "outcome": "success",
        "num_steps": 6,
        "committed_at_ns": 1,
    }


def test_round_trip():
    ann = EpisodeAnnouncement.from_json(json.dumps(_good()))
    assert EpisodeAnnouncement.from_json(ann.to_json()) == ann
    assert ann.size == 123 and ann.robot_id == "robot_01"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 2),
        ("episode_id", "../etc"),
        ("robot_id", "Robot 1"),
        ("key", "robot_02/x.mcap"),
        ("sha256", "XYZ"),
        ("size", 0),
        ("size", "12"),
        ("size", True),
        ("outcome", "great"),
        ("num_steps", -1),
        ("task", ""),
    ],
)
def test_bad_field_is_named(field, value):
    body = _good() | {field: value}
    with pytest.raises(AnnouncementError) as err:
        EpisodeAnnouncement.from_json(json.dumps(body))
    assert err.value.field == field


def test_missing_unknown_garbage_and_oversize():
    body = _good()
    del body["sha256"]
    with pytest.raises(AnnouncementError, match="sha256"):
        EpisodeAnnouncement.from_json(json.dumps(body))
    with pytest.raises(AnnouncementError, match="extra"):
        EpisodeAnnouncement.from_json(json.dumps(_good() | {"extra": 1}))
    for junk in (b"\xff\xfe", b"[1,2]", b"{", b""):
        with pytest.raises(AnnouncementError):
            EpisodeAnnouncement.from_json(junk)
    with pytest.raises(AnnouncementError, match="exceeds"):
        EpisodeAnnouncement.from_json(b" " * (MAX_ANNOUNCEMENT_BYTES + 1))
