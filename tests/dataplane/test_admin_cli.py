"""`lwd admin` end to end against the real broker and store, with a real robot policy sync listening."""

from __future__ import annotations

import json
import stat
import time

import pytest
from helpers.policy_artifacts import (
    build_tiny_artifact,
    clear_policy_plane,
    make_sync,
    mqtt_ep,
    ready_with,
    wait_until,
)

from lwd_learner.admin import main
from lwd_learner.coordinator import EpisodeRecord, SqliteSnapshotStore
from lwd_protocol.announce import RobotPolicyStatus
from lwd_protocol.names import MqttTopics
from lwd_protocol.signing import load_private_key, load_trusted_keys
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt


@pytest.fixture
def admin_env(mqtt_broker, s3_store, tmp_path, monkeypatch, capsys):
    clear_policy_plane(mqtt_broker, s3_store)
    mq, s3 = mqtt_broker.identity("admin"), s3_store.identity("admin")
    monkeypatch.setenv("LWD_MQTT", f"{mqtt_broker.host}:{mqtt_broker.port}")
    monkeypatch.setenv("LWD_MQTT_USER", "admin")
    monkeypatch.setenv("LWD_MQTT_PASSWORD", mq.password)
    monkeypatch.setenv("LWD_S3", s3_store.endpoint)
    monkeypatch.setenv("LWD_S3_ACCESS_KEY", s3.access_key)
    monkeypatch.setenv("LWD_S3_SECRET_KEY", s3.secret_key)
    assert main(["keygen", "--out", str(tmp_path / "keys" / "admin"), "--json"]) == 0
    keygen = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("LWD_ADMIN_KEY", keygen["private"])
    yield keygen
    clear_policy_plane(mqtt_broker, s3_store)


def run_json(capsys, *argv: str):
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def run_fail(capsys, *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 1, out.out
    return out.err


def test_keygen_writes_a_private_key_only_its_owner_can_read(admin_env, tmp_path, capsys):
    private = tmp_path / "keys" / "admin.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_private_key(private)
    trusted = load_trusted_keys([tmp_path / "keys"])  # the .pub a robot would carry
    assert list(trusted) == [admin_env["key_id"]]
    assert trusted[admin_env["key_id"]].public_bytes_raw() == key.public_key().public_bytes_raw()
    err = run_fail(capsys, "keygen", "--out", str(tmp_path / "keys" / "admin"))
    assert "refusing to overwrite" in err


def test_push_list_rollback_status(admin_env, mqtt_broker, s3_store, tmp_path, capsys):
    trusted = load_trusted_keys([tmp_path / "keys"])
    r1 = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "c1", trusted).start()
    try:
        evals = {"eval": {"success_rate": 0.8, "episodes": 20}}
        build_tiny_artifact(tmp_path / "a1", 1, training_snapshot=4)
        build_tiny_artifact(tmp_path / "a2", 2, 1, training_snapshot=9, notes=json.dumps(evals))
        (order,) = run_json(capsys, "push", str(tmp_path / "a1"))["orders"]
        assert (order["kind"], order["version"], order["target"]) == ("publish", 1, "fleet")
        assert order["key_id"] == admin_env["key_id"] and order["issued_by"] == "admin"
        assert wait_until(ready_with(r1, 1), 30), r1.history()[-3:]
        r1.note_active(1, "onnxruntime-cpu")
        (canary,) = run_json(capsys, "push", str(tmp_path / "a2"), "--robot", "robot_01", "--note", "canary")["orders"]
        assert canary["target"] == "robot_01" and canary["seq"] > order["seq"]
        assert wait_until(ready_with(r1, 2), 30), r1.history()[-3:]

        listing = {row["version"]: row for row in run_json(capsys, "list")}
        assert sorted(listing) == [1, 2]
        assert (listing[1]["training_snapshot"], listing[1]["parent_version"]) == (4, 0)
        assert (listing[2]["training_snapshot"], listing[2]["parent_version"]) == (9, 1)
        assert listing[2]["evaluation"] == evals["eval"] and listing[1]["evaluation"] is None
        assert listing[1]["ordered_for"] == ["fleet"] and listing[2]["ordered_for"] == ["robot_01"]
        assert listing[1]["key_id"] == admin_env["key_id"] and listing[1]["complete"]
        text_code = main(["list"])
        assert text_code == 0 and "[ordered: robot_01]" in capsys.readouterr().out

        # pushing an older version is refused client-side; the way back is a rollback order
        err = run_fail(capsys, "push", str(tmp_path / "a1"), "--robot", "robot_01")
        assert "lwd admin rollback" in err
        (back,) = run_json(capsys, "rollback", "1", "--robot", "robot_01", "--note", "v2 drops cups")["orders"]
        assert (back["kind"], back["version"], back["note"]) == ("rollback", 1, "v2 drops cups")
        # the controller still runs v1, so once the rollback is prepared nothing is pending any more
        assert wait_until(lambda: r1.state.current_version == 1, 30), r1.history()[-3:]
        assert (r1.status().state, r1.status().pending_version) == ("idle", 0)
        assert "not in lwd-policies" in run_fail(capsys, "rollback", "7")

        # robot_02 reports pending uploads in its status record (another robot part may add keys)
        _retain_status(mqtt_broker, "robot_02", pending_uploads=3)
        db = tmp_path / "coord.db"
        _coordinator_db(db)
        seen: list[dict] = []

        def settled() -> bool:  # robots publish their status asynchronously: poll the retained records
            seen.append(run_json(capsys, "status", "--coordinator-db", str(db)))
            rows = {r["robot_id"]: r for r in seen[-1]["robots"]}
            return rows.get("robot_01", {}).get("state") == "idle" and "robot_02" in rows

        assert wait_until(settled, 10), seen[-1]
        status = seen[-1]
        assert status["fleet_order"]["version"] == 1
        rows = {r["robot_id"]: r for r in status["robots"]}
        assert rows["robot_01"]["running"] == 1 and rows["robot_01"]["pinned"] and rows["robot_01"]["ordered"] == 1
        assert rows["robot_01"]["state"] == "idle" and rows["robot_01"]["backend"] == "onnxruntime-cpu"
        assert rows["robot_01"]["episodes"] == 4 and rows["robot_01"]["success_rate"] == pytest.approx(0.75)
        assert rows["robot_01"]["episodes_per_hour"] == pytest.approx(3.0)  # 3 of the 4 within the last hour
        assert rows["robot_02"]["pending_uploads"] == 3 and rows["robot_02"]["running"] == 2
        assert rows["robot_02"]["episodes"] == 1 and rows["robot_02"]["success_rate"] == 0.0
        assert main(["status", "--coordinator-db", str(tmp_path / "absent.db")]) == 0
        assert "not reachable" in capsys.readouterr().out

        # a group: one upload (already there), one pin per robot
        group = run_json(capsys, "push", str(tmp_path / "a2"), "--robot", "robot_01", "--robot", "robot_02")["orders"]
        assert [o["target"] for o in group] == ["robot_01", "robot_02"] and {o["version"] for o in group} == {2}
        assert wait_until(lambda: r1.state.current_version == 2, 30), r1.history()[-3:]
    finally:
        r1.stop()


def test_errors_are_one_line_and_nonzero(admin_env, tmp_path, capsys, monkeypatch):
    assert "not a policy artifact folder" in run_fail(capsys, "push", str(tmp_path))
    build_tiny_artifact(tmp_path / "a1", 1)
    (tmp_path / "a1" / "policy.onnx").write_bytes(b"garbage")
    assert "policy.onnx" in run_fail(capsys, "push", str(tmp_path / "a1"))
    monkeypatch.delenv("LWD_ADMIN_KEY")
    assert "no signing key" in run_fail(capsys, "rollback", "1")
    monkeypatch.setenv("LWD_MQTT_PASSWORD", "wrong")
    assert "refused" in run_fail(capsys, "unpin", "--robot", "robot_01")


def _retain_status(broker, robot: str, **extra) -> None:
    status = RobotPolicyStatus(robot, "ready", 2, 0, "tensorrt", "running v2", time.time_ns(), extra=extra)
    ep = mqtt_ep(broker, "admin")
    client = connect_mqtt(make_mqtt_client(ep), ep)
    try:
        client.publish(MqttTopics.robot_status(robot), status.to_json(), qos=1, retain=True).wait_for_publish(5)
    finally:
        stop_mqtt(client)


def _coordinator_db(path) -> None:
    store = SqliteSnapshotStore(path)
    now = time.time_ns()
    rows = [
        ("robot_01", "success", now - 60 * 10**9),
        ("robot_01", "success", now - 600 * 10**9),
        ("robot_01", "failure", now - 1200 * 10**9),
        ("robot_01", "success", now - 7200 * 10**9),  # outside the one-hour window
        ("robot_02", "failure", now - 30 * 10**9),
    ]
    ids = []
    for i, (robot, outcome, t) in enumerate(rows):
        eid = f"{robot}-ep{i}"
        store.add_episode(
            EpisodeRecord(eid, robot, f"{robot}/{eid}.mcap", "0" * 64, 10, "restocking", outcome, 5, "robot", t, now)
        )
        ids.append(eid)
    store.commit_snapshot(ids[:3])
    store.commit_snapshot(ids[3:])
    store.close()


def _checkpoint_with_policy(directory, snapshot: int, with_policy_io: bool = True):
    """A tiny LWD learner checkpoint (step 7) as a learner writes one, with its data's normaliser."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("jax2onnx", reason="the learner's optional `export` extra (jax2onnx) is not installed")
    import dataclasses

    import numpy as np
    from helpers.learner_batches import TINY_NETWORK

    from lwd_learner.agent import LWDAgent
    from lwd_learner.checkpoint import Checkpointer
    from lwd_learner.checkpoint_policy import policy_extra
    from lwd_learner.config import LearnerConfig
    from lwd_learner.dataset import EpisodeArrays, compute_normalizer
    from lwd_protocol.episode import EpisodeSource, Outcome
    from lwd_protocol.robot_spec import JOINT_NAMES

    rng = np.random.default_rng(3)
    dim = len(JOINT_NAMES)
    episodes = [
        EpisodeArrays(
            task="restocking",
            states=rng.normal(0, 0.3, (40, dim)),
            actions=rng.normal(0, 0.3, (40, dim)),
            action_source=np.zeros(40, np.uint8),
            outcome=Outcome.SUCCESS,
            source=EpisodeSource.DEMO,
        )
        for _ in range(2)
    ]
    normalizer = compute_normalizer(episodes, state_source="joint_positions")
    net = dataclasses.replace(TINY_NETWORK, obs_dim=normalizer.obs_dim, action_dim=dim, horizon=30)
    config = dataclasses.replace(LearnerConfig.offline(), network=net)
    state = LWDAgent(config).init(jax.random.PRNGKey(0))
    extra = policy_extra(normalizer, snapshot) if with_policy_io else {"snapshot": snapshot}
    with Checkpointer(directory) as checkpointer:
        assert checkpointer.save(7, state, key=jax.random.PRNGKey(1), config=config, extra=extra)
    return normalizer


def test_push_checkpoint_exports_signs_and_a_robot_validates_it(admin_env, mqtt_broker, s3_store, tmp_path, capsys):
    from dataclasses import asdict

    from lwd_protocol.manifest import PolicyManifest
    from lwd_protocol.store import MANIFEST_NAME

    normalizer = _checkpoint_with_policy(tmp_path / "ckpt", snapshot=12)
    _checkpoint_with_policy(tmp_path / "old", snapshot=1, with_policy_io=False)
    trusted = load_trusted_keys([tmp_path / "keys"])
    r1 = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "c1", trusted).start()
    try:
        (order,) = run_json(capsys, "push", "--checkpoint", str(tmp_path / "ckpt"), "--note", "from ckpt")["orders"]
        assert (order["kind"], order["version"], order["target"]) == ("publish", 1, "fleet")
        # the robot downloads it, checks hashes + the admin's signature, and validates the engine
        assert wait_until(ready_with(r1, 1), 60), r1.history()[-3:]
        (row,) = run_json(capsys, "list")
        assert (row["version"], row["training_snapshot"], row["parent_version"]) == (1, 12, 0)
        assert row["key_id"] == admin_env["key_id"] and row["complete"]
        (cached,) = [p for p in (tmp_path / "c1").rglob(MANIFEST_NAME) if "000001" in str(p)]
        manifest = PolicyManifest.from_json(cached.read_bytes())  # what the robot verified and loads
        assert asdict(manifest.normalization) == asdict(normalizer.to_manifest())
        assert manifest.action.relative_dims == normalizer.action_spec().relative_dims
        r1.note_active(1, "onnxruntime-cpu")
        # the second push of a checkpoint gets the next version, parented on the fleet's order
        (order2,) = run_json(capsys, "push", "--checkpoint", str(tmp_path / "ckpt"), "--step", "7")["orders"]
        assert order2["version"] == 2
        listing = {r["version"]: r for r in run_json(capsys, "list")}
        assert listing[2]["parent_version"] == 1
    finally:
        r1.stop()
    assert "no 'policy_io' entry" in run_fail(capsys, "push", "--checkpoint", str(tmp_path / "old"))
    assert "no checkpoint step 3" in run_fail(capsys, "push", "--checkpoint", str(tmp_path / "ckpt"), "--step", "3")
    assert "exactly one of" in run_fail(capsys, "push")
