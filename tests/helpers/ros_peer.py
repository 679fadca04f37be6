"""A separate-process rclpy peer for DDS tests: `talk` publishes, `listen` prints what it got.

Run as `python ros_peer.py talk|listen --topic T --count N --timeout S`. The parent test sets
the isolated ROS environment; this script refuses to run without LOCALHOST discovery.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["talk", "listen"])
    parser.add_argument("--topic", default="lwd_smoke/episode_event")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        print("refusing to start: ROS_AUTOMATIC_DISCOVERY_RANGE is not LOCALHOST", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from lwd_msgs.msg import EpisodeEvent

    rclpy.init()
    node = rclpy.create_node(f"lwd_smoke_{args.mode}")
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    deadline = time.monotonic() + args.timeout
    received: list[EpisodeEvent] = []
    try:
        if args.mode == "talk":
            pub = node.create_publisher(EpisodeEvent, args.topic, qos)
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            if pub.get_subscription_count() == 0:
                print("no subscriber matched", file=sys.stderr)
                return 3
            for i in range(args.count):
                msg = EpisodeEvent(
                    event=EpisodeEvent.COMMITTED,
                    episode_id=f"ep-{i}",
                    robot_id="robot_01",
                    task="gongfu_tea",
                    outcome=EpisodeEvent.OUTCOME_SUCCESS,
                    num_steps=100 + i,
                    num_intervention_steps=i,
                    policy_version=7,
                )
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                rclpy.spin_once(node, timeout_sec=0.02)
            # let reliable delivery finish before tearing down the participant
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            return 0
        node.create_subscription(EpisodeEvent, args.topic, received.append, qos)
        print("READY", flush=True)
        while len(received) < args.count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        for msg in received:
            print(
                f"GOT {msg.episode_id} {msg.robot_id} {msg.task} {msg.num_steps} {msg.num_intervention_steps} "
                f"{msg.policy_version} {msg.outcome}",
                flush=True,
            )
        return 0 if len(received) >= args.count else 4
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
