"""PolicyAnnouncement and RobotPolicyStatus: strict JSON parsers that name the offending field."""

from __future__ import annotations

import json

import pytest

from lwd_protocol.announce import (
    MAX_POLICY_ANNOUNCEMENT_BYTES,
    AnnouncementError,
    PolicyAnnouncement,
    RobotPolicyStatus,
    utc_timestamp,
)
from lwd_protocol.names import MqttTopics

GOOD = {
    "v": 1,
    "kind": "rollback",
    "version": 4,
    "parent_version": 3,
    "manifest_sha256": "0f" * 32,
    "created_at": "2026-11-21T10:00:00.123Z",
    "issued_by": "ops@lab",
    "target": "robot_07",
    "seq": 1795000000000,
    "note": "v5 drops cups",
    "signature": {"alg": "ed25519", "key_id": "0123456789abcdef", "value": "AAAA"},
}


def test_roundtrip_topic_and_signing_payload():
    ann = PolicyAnnouncement.from_json(json.dumps(GOOD))
    assert PolicyAnnouncement.from_json(ann.to_json()) == ann
    assert ann.topic() == MqttTopics.policy_robot("robot_07") and not ann.is_fleet
    fleet = PolicyAnnouncement.from_json(json.dumps({**GOOD, "target": "fleet"}))
    assert fleet.topic() == MqttTopics.policy_fleet() and fleet.is_fleet
    payload = json.loads(ann.signing_payload())
    assert "signature" not in payload and payload["seq"] == GOOD["seq"]
    assert ann.signing_payload() == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    minimal = {k: v for k, v in GOOD.items() if k not in ("note", "signature", "v")}
    assert PolicyAnnouncement.from_json(json.dumps(minimal)).signature is None


def test_utc_timestamp_is_what_the_parser_accepts():
    stamp = utc_timestamp(1_795_000_000_999_456_789)
    # 1_795_000_000 s = 20775 days (2026-11-18) + 40000 s (11:06:40); ms truncated, not rounded
    assert stamp == "2026-11-18T11:06:40.999Z"
    PolicyAnnouncement.from_json(json.dumps({**GOOD, "created_at": stamp}))


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"extra": 1}, "extra", "unknown field"),
        ({"kind": None}, "kind", "expected a string"),
        ({"kind": "delete"}, "kind", "not one of"),
        ({"version": 0}, "version", "0 < 1"),
        ({"version": True}, "version", "expected an integer"),
        ({"version": "4"}, "version", "expected an integer"),
        ({"parent_version": 4}, "parent_version", "must be below version 4"),
        ({"manifest_sha256": "0F" * 32}, "manifest_sha256", "lowercase hex"),
        ({"created_at": "2026-11-21 10:00:00"}, "created_at", "ISO-8601"),
        ({"created_at": "2026-13-41T10:00:00Z"}, "created_at", "does not match format"),
        ({"issued_by": "root; rm -rf"}, "issued_by", "plain identity"),
        ({"target": "Robot 7"}, "target", "expected 'fleet' or a robot id"),
        ({"seq": 0}, "seq", "0 < 1"),
        ({"note": "x" * 257}, "note", "longer than 256"),
        ({"signature": {"alg": "ed25519"}}, "signature", "expected null or an object"),
        ({"signature": {"alg": 1, "key_id": "k", "value": "v"}}, "signature", "must be strings"),
        ({"v": 2}, "v", "protocol version 2 is not supported"),
    ],
)
def test_bad_fields_are_named(change, field, needle):
    with pytest.raises(AnnouncementError, match=needle) as info:
        PolicyAnnouncement.from_json(json.dumps({**GOOD, **change}))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"{", "not UTF-8 JSON"),
        (b" " * (MAX_POLICY_ANNOUNCEMENT_BYTES + 1), "exceeds"),
    ],
)
def test_garbage_payloads_are_refused_cheaply(payload, needle):
    with pytest.raises(AnnouncementError, match=needle):
        PolicyAnnouncement.from_json(payload)


def test_missing_field_is_named():
    data = dict(GOOD)
    del data["seq"]
    with pytest.raises(AnnouncementError, match="'seq': missing"):
        PolicyAnnouncement.from_json(json.dumps(data))


def test_robot_status_keeps_other_parts_keys_and_checks_its_own():
    status = RobotPolicyStatus(
        "robot_01", "ready", 3, 4, "onnxruntime-cpu", "v4 ready", 123, extra={"pending_uploads": 2}
    )
    parsed = RobotPolicyStatus.from_json(status.to_json())
    assert parsed == status and parsed.extra == {"pending_uploads": 2}
    base = json.loads(status.to_json())
    for change, field in (
        ({"state": "flying"}, "state"),
        ({"active_version": -1}, "active_version"),
        ({"robot_id": "../x"}, "robot_id"),
        ({"message": "m" * 2000}, "message"),
    ):
        with pytest.raises(AnnouncementError) as info:
            RobotPolicyStatus.from_json(json.dumps({**base, **change}))
        assert info.value.field == field
