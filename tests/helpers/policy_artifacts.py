"""Shared pieces of the policy publication/sync tests (no tests in here).

A tiny but real policy artifact: an ONNX graph built with the onnx helper API that follows the
policy tensor contract (state, noise -> actions), its reference I/O computed independently in
numpy, and a manifest per lwd_protocol.policy_io. Plus endpoints for the localstack fixtures,
publisher/robot factories, and a cleaner that leaves the shared broker and bucket empty of
policy state between tests (topic and bucket names are fixed by the protocol).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

from helpers.dataplane import wait_until  # noqa: F401  (re-exported for the policy tests)
from lwd_fleet.policy_sync import PolicySync, PolicySyncConfig
from lwd_learner.publish import PolicyPublisher, PublisherConfig
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec, PolicyManifest, file_entry
from lwd_protocol.names import MqttTopics
from lwd_protocol.policy_io import input_specs, output_specs, save_reference_io
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES
from lwd_protocol.signing import sign_manifest
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, POLICIES_BUCKET, REFERENCE_IO_NAME
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, connect_mqtt, make_mqtt_client, stop_mqtt

STATE_DIM = 8
ROBOTS = ("robot_01", "robot_02")


def tiny_onnx(path: Path, weight: np.ndarray, bias: np.ndarray, alpha: float, state_dim: int, horizon: int) -> None:
    """actions = reshape(state @ W + b, (-1, H, A)) + alpha * noise, batch dimension dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a = len(JOINT_NAMES)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["state", "W"], ["sw"]),
            helper.make_node("Add", ["sw", "b"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["mean"]),
            helper.make_node("Mul", ["noise", "alpha"], ["scaled"]),
            helper.make_node("Add", ["mean", "scaled"], ["actions"]),
        ],
        "tiny_policy",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", state_dim]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", horizon, a]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", horizon, a])],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
            numpy_helper.from_array(np.array([-1, horizon, a], np.int64), "shape"),
            numpy_helper.from_array(np.array(alpha, np.float32), "alpha"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lwd-tests")
    model.ir_version = 10  # onnxruntime 1.31 rejects onnx 1.23's default IR v14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_tiny_artifact(
    folder: Path,
    version: int,
    parent: int = 0,
    *,
    key=None,
    horizon: int = CHUNK_HORIZON,
    graph_horizon: int | None = None,
    notes: str = "",
    training_snapshot: int = 1,
    reference_shift: float = 0.0,
) -> PolicyManifest:
    """Write policy.onnx + reference_io.npz + manifest.json (signed when `key` is given) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    a = len(JOINT_NAMES)
    gh = graph_horizon or horizon
    rng = np.random.default_rng(1000 + version)
    weight = rng.normal(0, 0.3, (STATE_DIM, gh * a)).astype(np.float32)
    bias = rng.normal(0, 0.1, gh * a).astype(np.float32)
    alpha = float(0.1 + 0.01 * version)
    tiny_onnx(folder / MODEL_NAME, weight, bias, alpha, STATE_DIM, gh)
    state = rng.normal(size=(2, STATE_DIM)).astype(np.float32)
    noise = rng.normal(size=(2, gh, a)).astype(np.float32)
    # independent computation of what the graph must output, in float64
    expected = (state.astype(np.float64) @ weight + bias).reshape(2, gh, a) + alpha * noise.astype(np.float64)
    save_reference_io(
        folder / REFERENCE_IO_NAME,
        {"state": state, "noise": noise},
        {"actions": (expected + reference_shift).astype(np.float32)},
    )
    obs = ObservationSpec(state_source="sim_state", state_dim=STATE_DIM)
    act = ActionSpec(joint_names=list(JOINT_NAMES), horizon=horizon)
    manifest = PolicyManifest(
        version=version,
        parent_version=parent,
        created_at="2026-11-21T00:00:00Z",
        training_snapshot=training_snapshot,
        model_file=MODEL_NAME,
        files={n: file_entry(folder / n) for n in (MODEL_NAME, REFERENCE_IO_NAME)},
        inputs=input_specs(obs, act),
        outputs=output_specs(act),
        observation=obs,
        action=act,
        normalization=Normalization([0.0] * STATE_DIM, [1.0] * STATE_DIM, [0.0] * a, [1.0] * a),
        reference_io_file=REFERENCE_IO_NAME,
        reference_atol=1e-4,
        notes=notes,
    )
    if key is not None:
        sign_manifest(manifest, key)
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest


def mqtt_ep(broker, user: str, client_id: str = "") -> MqttEndpoint:
    ident = broker.identity(user)
    return MqttEndpoint(
        broker.host, broker.port, ident.username, ident.password, client_id=client_id, reconnect_max_s=1.0
    )


def s3_ep(store, name: str) -> S3Endpoint:
    ident = store.identity(name)
    return S3Endpoint(store.endpoint, ident.access_key, ident.secret_key, region=store.region, connect_timeout_s=1.0)


def make_publisher(broker, store, key, issued_by: str = "admin") -> PolicyPublisher:
    cfg = PublisherConfig(s3=s3_ep(store, "admin"), mqtt=mqtt_ep(broker, "admin"), issued_by=issued_by)
    return PolicyPublisher(cfg, key)


def make_sync(broker, store, robot_id: str, cache_dir: Path, trusted, on_status=None, **kw) -> PolicySync:
    cfg = PolicySyncConfig(
        robot_id=robot_id,
        cache_dir=cache_dir,
        mqtt=mqtt_ep(broker, robot_id, f"sync-{robot_id}-{secrets.token_hex(3)}"),
        s3=s3_ep(store, robot_id),
        trusted_keys=trusted,
        backend="onnxruntime-cpu",
        retry_initial_s=0.2,
        retry_max_s=1.0,
        **kw,
    )
    return PolicySync(cfg, on_status=on_status)


def clear_policy_plane(broker, store) -> None:
    """Empty the retained policy/status topics and the policies bucket (shared session services)."""
    client = connect_mqtt(make_mqtt_client(mqtt_ep(broker, "admin")), mqtt_ep(broker, "admin"))
    try:
        topics = [MqttTopics.policy_fleet()]
        topics += [MqttTopics.policy_robot(r) for r in ROBOTS] + [MqttTopics.robot_status(r) for r in ROBOTS]
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        stop_mqtt(client)
    s3 = store.client("admin")
    for obj in s3.list_objects(POLICIES_BUCKET, recursive=True):
        s3.remove_object(POLICIES_BUCKET, obj.object_name)


def ready_with(sync: PolicySync, version: int) -> Callable[[], bool]:
    def pred() -> bool:
        s = sync.status()
        return s.state == "ready" and s.pending_version == version

    return pred


def rejected(sync: PolicySync, version: int) -> Callable[[], bool]:
    return lambda: sync.status().rejected_version == version and bool(sync.status().rejected_reason)
