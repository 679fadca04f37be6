"""Two learner processes under ``jax.distributed`` on 127.0.0.1: same update as one device, agreed snapshot.

Each process owns one CPU device and half of the global batch, joins through the coordinator
(process 0, bound to 127.0.0.1) and runs the data-parallel LWD update; the test process runs the
plain single-device update on the whole batch and compares. The processes also agree on the
replay snapshot version (min over processes) through a collective.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lwd_learner.baselines import LWDMethod

REPO = Path(__file__).resolve().parents[2]

COMMON = r"""
import jax, jax.numpy as jnp
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig

NET = NetworkConfig(obs_dim=6, horizon=4, action_dim=3, policy_hidden=(32, 32), critic_hidden=(32,),
                    value_hidden=(32,), obs_hidden=(32,), obs_embed_dim=16, time_dim=16, pool_dim=16, pool_heads=2)
CONFIG = LearnerConfig(network=NET, policy=PolicyConfig(flow_steps=2, qam_loss_steps=1))
B = 16


def global_batch():
    k = jax.random.split(jax.random.key(0), 5)
    return {
        "obs": jax.random.normal(k[0], (B, 6)), "actions": jax.random.normal(k[1], (B, 4, 3)),
        "next_obs": jax.random.normal(k[2], (B, 6)),
        "reward": (jax.random.uniform(k[3], (B,)) < 0.3).astype(jnp.float32),
        "discount": jnp.where(jax.random.uniform(k[4], (B,)) < 0.2, 0.0, 0.99),
    }
"""

WORKER = r"""
import json, sys
from lwd_learner import parallel

config = parallel.DistributedConfig.from_env()
parallel.initialize(config)  # before any JAX computation
import jax, numpy as np
from lwd_learner.baselines import LWDMethod
from lwd_learner.replay_reader import agree_version
from common import CONFIG, B, global_batch

pid = jax.process_index()
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
mesh = parallel.make_mesh()
rows = slice(pid * B // 2, (pid + 1) * B // 2)
local = {name: np.asarray(v)[rows] for name, v in global_batch().items()}
method = LWDMethod(CONFIG)
state = parallel.replicate(method.init(jax.random.key(1)), mesh)
key = parallel.replicate(jax.random.key(2), mesh)
step = parallel.data_parallel(method.update_fn, mesh)
new_state, metrics = step(state, parallel.shard_batch(local, mesh), key)
host_state = parallel.to_host(new_state)
out = {
    "metrics": {k: float(v) for k, v in parallel.to_host(metrics).items()},
    "snapshot": parallel.agreed_snapshot_version(7 if pid == 0 else 5),
    "reader_snapshot": agree_version(3 if pid == 0 else 9, parallel.host_allgather),
    "gathered": parallel.host_allgather(np.asarray([10 + pid], np.int64)).reshape(-1).tolist(),
}
with open(sys.argv[1] + ".json", "w") as f:
    json.dump(out, f)
np.savez(sys.argv[1] + ".npz", *jax.tree_util.tree_leaves(host_state))
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_update(tmp_path: Path) -> None:
    # Gloo (JAX's CPU collectives) listens on the address the hostname resolves to: loopback only.
    if not socket.gethostbyname(socket.gethostname()).startswith("127."):
        pytest.skip("hostname does not resolve to loopback; gloo would listen on an external interface")
    (tmp_path / "common.py").write_text(COMMON)
    (tmp_path / "worker.py").write_text(WORKER)
    address = f"127.0.0.1:{_free_port()}"
    base_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    base_env.update(
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(tmp_path), base_env.get("PYTHONPATH", "")]),
        LWD_COORDINATOR_ADDRESS=address,
        LWD_COORDINATOR_BIND_ADDRESS=address,
        LWD_NUM_PROCESSES="2",
    )
    procs = []
    try:
        for pid in range(2):
            env = dict(base_env, LWD_PROCESS_ID=str(pid))
            out = tmp_path / f"out{pid}"
            log = open(tmp_path / f"log{pid}.txt", "w")
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, str(tmp_path / "worker.py"), str(out)],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )
        for proc, _ in procs:
            proc.wait(timeout=400)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for pid, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"log{pid}.txt").read_text()[-3000:]
    results = [json.loads((tmp_path / f"out{pid}.json").read_text()) for pid in range(2)]
    leaves = [np.load(tmp_path / f"out{pid}.npz") for pid in range(2)]

    common: dict = {}
    exec(COMMON, common)  # the same config and global batch the workers built
    config, global_batch = common["CONFIG"], common["global_batch"]
    method = LWDMethod(config)
    single_state, single = method.update(method.init(jax.random.key(1)), global_batch(), jax.random.key(2))
    want_leaves = jax.tree_util.tree_leaves(single_state)
    for res, got_leaves in zip(results, leaves, strict=True):
        assert res["snapshot"] == 5 and res["reader_snapshot"] == 3 and res["gathered"] == [10, 11]
        for name, value in single.items():
            assert res["metrics"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-5), name
        assert len(got_leaves.files) == len(want_leaves)
        for i, want in enumerate(want_leaves):  # every parameter, optimiser moment and counter
            np.testing.assert_allclose(got_leaves[f"arr_{i}"], np.asarray(want), rtol=1e-5, atol=2e-5)
