"""Benchmark: recorder writer throughput, three cameras, raw vs compressed, 224 and 128 px.

Feeds the recorder's writer (lwd_fleet.recording.EpisodeRecorder, the code behind the recorder
node) one episode of steps as fast as it takes them -- three camera frames, a joint state, an
executed action and a sim state per step, the frames as the CDR bytes rclpy hands the node (raw
passthrough) or as Image messages (compressed: decoded, JPEG/PNG-encoded on the writer thread) --
and times until the episode is committed (fsync + rename). The queue is sized to hold the whole
episode so nothing is dropped: this measures sustained writer capacity, which must stay well
above 30 steps/s for the 30 Hz loop. Also times ``add_step`` (what a ROS callback pays).

Frames are MuJoCo renders of the sim robot ("sim": flat shading, compresses well) and the same
renders with sensor-like Gaussian noise sigma=3 ("camera": what real cameras look like to zstd).

    .venv/bin/python ros2_ws/src/lwd_fleet/bench/bench_recorder.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from lwd_fleet.recording import EpisodeRecorder, Frame, RecorderConfig, StepRecord
from lwd_protocol.episode import EpisodeStart, Outcome, new_episode_id
from lwd_protocol.episode_io import read_episode
from lwd_protocol.robot_spec import CAMERA_NAMES, CONTROL_RATE_HZ, JOINT_NAMES

RESULTS = Path(__file__).resolve().parent / "results" / "recorder_throughput.json"
MODES = {  # name -> (image_compression, image_downscale)
    "raw": ("none", 1),
    "jpeg": ("jpeg", 1),
    "png": ("png", 1),
}


def render_frames(size: int, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` consecutive tick renders of the sim robot (an expert moving the arms)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lwd_sim.env import make_env

    env = make_env("restocking", seed=seed, render=True, image_size=size)
    rng = np.random.default_rng(seed)
    frames = []
    q = env.joint_position()
    for _ in range(count):
        q = q + rng.normal(0, 0.02, q.shape)
        env.step(q)
        frames.append({c: np.ascontiguousarray(img) for c, img in env.render(size).items()})
    env.close()
    return frames


def image_msg(img: np.ndarray, t: int, cam: str) -> Image:
    h, w, _ = img.shape
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=img.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = t // 30, (t % 30) * 33_333_333, cam
    return msg


def run(frames: list[dict[str, np.ndarray]], mode: str, steps: int, spool: Path) -> dict:
    compression, downscale = MODES[mode]
    cfg = RecorderConfig(
        robot_id="robot_01",
        spool_dir=spool,
        queue_steps=steps + 1,
        image_compression=compression,
        image_downscale=downscale,
        min_free_bytes=0,
    )
    done = []
    rec = EpisodeRecorder(cfg, on_committed=lambda s, e, path: done.append(path))
    # what the node's callbacks hold: CDR bytes (raw passthrough) or Image messages (processing)
    cycle = [
        {c: (serialize_message(m) if cfg.passthrough_images else m) for c, m in ((c, image_msg(f[c], t, c)) for c in f)}
        for t, f in enumerate(frames)
    ]
    input_bytes = sum(f.nbytes for f in frames[0].values())
    start = EpisodeStart(episode_id=new_episode_id("robot_01"), robot_id="robot_01", task="restocking", instruction="")
    q = np.zeros(len(JOINT_NAMES))
    add_ns = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    rec.start(start)
    for t in range(steps):
        imgs = {c: Frame(d, t, time.monotonic()) for c, d in cycle[t % len(cycle)].items()}
        record = StepRecord(
            position=q.astype(np.float32),
            source=0,
            policy_version=1,
            stamp_ns=t,
            received_mono=time.monotonic(),
            joint_position=q + t,
            joint_velocity=q,
            joint_stamp_ns=t,
            images=imgs,
            sim={"state": [0.0] * 32, "subtask_index": 0, "num_subtasks": 1, "success": False, "failed": False},
            controller_step=t,
        )
        a = time.perf_counter_ns()
        assert rec.add_step(record)
        add_ns.append(time.perf_counter_ns() - a)
    rec.end(Outcome.SUCCESS)
    assert rec.wait_idle(600) and done, rec.last_error
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rec.close()
    path = done[0]
    size = path.stat().st_size
    ep = read_episode(path, load_images=False)
    assert ep.num_steps == steps
    path.unlink()
    in_mb = input_bytes * steps / 1e6
    return {
        "steps": steps,
        "steps_per_s": round(steps / elapsed, 1),
        "cpu_s": round(cpu, 2),
        "steps_per_cpu_s": round(steps / cpu, 1),  # independent of other load on the machine
        "realtime_factor_at_30hz": round(steps / elapsed / CONTROL_RATE_HZ, 2),
        "image_input_mb_per_s": round(in_mb / elapsed, 1),
        "file_mb_per_s": round(size / 1e6 / elapsed, 1),
        "file_kb_per_step": round(size / 1e3 / steps, 1),
        "compression_ratio": round(input_bytes * steps / size, 2),
        "add_step_us_p50": round(float(np.percentile(add_ns, 50)) / 1e3, 1),
        "add_step_us_p99": round(float(np.percentile(add_ns, 99)) / 1e3, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per episode (300 = 10 s at 30 Hz)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp)
        for size in args.sizes:
            sim = render_frames(size, 30)
            noise = np.random.default_rng(1)
            camera = [
                {c: np.clip(img + noise.normal(0, 3, img.shape), 0, 255).astype(np.uint8) for c, img in f.items()}
                for f in sim
            ]
            for content, frames in (("sim", sim), ("camera", camera)):
                for mode in args.modes:
                    key = f"{size}px/{content}/{mode}"
                    results[key] = run(frames, mode, args.steps, spool)
                    print(key, json.dumps(results[key]), flush=True)
    report = {
        "what": "EpisodeRecorder writer: one episode of N steps (3 cameras + joint state + action + sim state),"
        " fed as fast as accepted, timed until committed (fsync + rename). steps_per_s is wall clock on a"
        " shared 2-core machine (other jobs running); steps_per_cpu_s is per CPU-second of this process",
        "cameras": list(CAMERA_NAMES),
        "jpeg_quality": RecorderConfig(robot_id="robot_01", spool_dir=Path(".")).jpeg_quality,
        "results": results,
        "control_rate_hz": CONTROL_RATE_HZ,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
