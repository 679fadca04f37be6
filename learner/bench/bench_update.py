"""Measure learner updates/s (SFT and full DIVL+QAM) of the default CPU model at batch 256.

Usage (from the repo root):

    .venv/bin/python learner/bench/bench_update.py [--batch 256] [--iters 20] [--repeats 3]
        [--qam-loss-steps M (0 = all steps)] [--out learner/bench/results/update_speed.json]

Compilation and one warm-up call are excluded; each repeat times ``--iters`` back-to-back
updates (blocking on the result once at the end) and the JSON keeps every repeat plus the best
and the median. The 1-minute load average is recorded before and after because the CPU is shared:
compare wall-clock numbers only at similar load; ``updates_per_cpu_s`` is less load-sensitive.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig
from lwd_learner.networks import param_count


def _batch(config: LearnerConfig, batch: int) -> dict[str, jax.Array]:
    net = config.network
    keys = jax.random.split(jax.random.key(1), 4)
    return {
        "obs": jax.random.normal(keys[0], (batch, net.obs_dim)),
        "actions": jax.random.normal(keys[1], (batch, net.horizon, net.action_dim)),
        "next_obs": jax.random.normal(keys[2], (batch, net.obs_dim)),
        "reward": (jax.random.uniform(keys[3], (batch,)) < 0.05).astype(jnp.float32),
        "discount": jnp.full((batch,), config.gamma_chunk, jnp.float32),
    }


def _time(step: Any, state: Any, batch: dict[str, jax.Array], iters: int, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(0))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    state, metrics = step(state, batch, jax.random.key(1))  # warm-up
    jax.block_until_ready(metrics)
    rates, cpu_rates = [], []
    for r in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(iters):
            state, metrics = step(state, batch, jax.random.key(1000 * r + i))
        jax.block_until_ready(metrics)
        rates.append(iters / (time.perf_counter() - start))
        cpu_rates.append(iters / (time.process_time() - cpu_start))
    return {
        "compile_and_first_call_s": round(compile_s, 2),
        "updates_per_s_repeats": [round(x, 2) for x in rates],
        "updates_per_s_best": round(max(rates), 2),
        "updates_per_s_median": round(statistics.median(rates), 2),
        # updates per CPU-second of this process (all threads); times the core count it bounds
        # the wall rate on an idle machine, which the shared CPU rarely is.
        "updates_per_cpu_s_median": round(statistics.median(cpu_rates), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qam-loss-steps", type=int, default=None, help="override; 0 = all flow steps (exact)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "update_speed.json")
    args = parser.parse_args()

    config = LearnerConfig()
    if args.qam_loss_steps is not None:
        steps = args.qam_loss_steps or None
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, qam_loss_steps=steps))
    agent = LWDAgent(config)
    state = agent.start_rl(agent.init(jax.random.key(0)))
    batch = _batch(config, args.batch)
    load_before = os.getloadavg()[0]
    results = {
        "sft_update": _time(agent.sft_update, state, batch, args.iters * 3, args.repeats),
        "divl_qam_update": _time(agent.update, state, batch, args.iters, args.repeats),
    }
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "batch": args.batch,
        "flow_steps": config.policy.flow_steps,
        "qam_loss_steps": config.policy.qam_loss_steps,
        "params": {
            "policy": param_count(state.policy_params),
            "critic": param_count(state.critic_params),
            "value": param_count(state.value_params),
        },
        "results": results,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
