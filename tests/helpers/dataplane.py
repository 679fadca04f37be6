"""Data-plane test helpers: endpoints from the localstack fixtures, tiny episodes, bounded waits.

A module of its own (not conftest.py) so tests import it by a unique name: pytest rebinds the
module name `conftest` to whichever test directory it collected last.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lwd_fleet.uplink import EpisodeUplink, UplinkConfig
from lwd_learner.coordinator import Coordinator, CoordinatorConfig
from lwd_protocol.episode import EpisodeEnd, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeWriter
from lwd_protocol.robot_spec import ACTION_DIM
from lwd_protocol.tasks import TASK_NAMES
from lwd_protocol.transport import MqttEndpoint, S3Endpoint


def mqtt_ep(broker, user: str, client_id: str = "", persistent: bool = False) -> MqttEndpoint:
    ident = broker.identity(user)
    return MqttEndpoint(
        broker.host,
        broker.port,
        ident.username,
        ident.password,
        client_id=client_id,
        clean_session=not persistent,
        reconnect_min_s=1,
        reconnect_max_s=2,
    )


def s3_ep(store, name: str) -> S3Endpoint:
    ident = store.identity(name)
    return S3Endpoint(store.endpoint, ident.access_key, ident.secret_key, region=store.region, connect_timeout_s=1.0)


def write_episode(spool: Path, robot_id: str, steps: int = 6, task: str | None = None, outcome=Outcome.SUCCESS) -> Path:
    """A small, valid episode (joint state + actions, no images), committed with the recorder's rename."""
    spool.mkdir(parents=True, exist_ok=True)
    eid = new_episode_id(robot_id)
    start = EpisodeStart(episode_id=eid, robot_id=robot_id, task=task or TASK_NAMES[0], instruction="test", cameras=())
    writer = EpisodeWriter(spool / episode_filename(eid), start)
    t0 = time.time_ns()
    q = np.zeros(ACTION_DIM, np.float32)
    for t in range(steps):
        writer.write_joint_state(q + t, t, t0 + t)
        writer.write_action(q + t + 0.5, t, t0 + t, source=0, policy_version=0)
    return writer.close(EpisodeEnd(outcome=outcome, num_steps=steps))


def wait_until(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return pred()


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def make_uplink(broker, store, robot_id: str, spool: Path, **kw) -> EpisodeUplink:
    cfg = UplinkConfig(
        robot_id=robot_id,
        spool_dir=spool,
        mqtt=mqtt_ep(broker, robot_id, uid(f"uplink-{robot_id}")),
        s3=s3_ep(store, robot_id),
        poll_interval_s=0.1,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        puback_timeout_s=3.0,
        **kw,
    )
    return EpisodeUplink(cfg)


def make_coordinator(broker, store, db: Path, client_id: str, **kw) -> Coordinator:
    cfg = CoordinatorConfig(
        mqtt=mqtt_ep(broker, "coordinator", client_id, persistent=True),
        s3=s3_ep(store, "admin"),
        db_path=db,
        retry_initial_s=0.2,
        retry_max_s=1.0,
        **{"batch_size": 100, "batch_interval_s": 0.3, "sweep_interval_s": None, **kw},
    )
    return Coordinator(cfg)
