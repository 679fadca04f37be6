"""The simulated dual-arm robot: MJCF generated from primitives (nothing is downloaded).

Two 7-DoF S-R-S arms (yaw, pitch, roll, elbow, roll, wrist pitch, wrist roll) on a torso in
front of a table, each with a parallel-jaw gripper whose two fingers are coupled by a joint
equality, so one `<arm>_gripper` joint (finger opening in metres) is the gripper's state.
Arm links are gravity-compensated and visual-only (no collisions): contact physics is spent
on objects and fixtures only, which keeps stepping fast and experts reliable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lwd_protocol.robot_spec import ARM_JOINTS, CAMERA_NAMES, CONTROL_RATE_HZ, JOINT_NAMES

ARMS = ("left", "right")
TABLE_TOP_Z = 0.75
TABLE_CENTER_X = 0.62
TABLE_HALF = (0.36, 0.55)  # half extents (x, y) of the table top
SHOULDER_Y = 0.26
BASE_Z = 0.82  # arm base (joint1) height
BASE_X = 0.15
GRIPPER_OPEN = 0.04  # finger opening [m] of a fully open gripper
GRIPPER_CLOSED = 0.0
# The gripper driver is a Schmitt trigger on the commanded opening: an open gripper closes on a
# command below a quarter stroke, a closed one opens on a command above three quarters.
GRIPPER_CLOSE_BELOW = GRIPPER_CLOSED + 0.25 * (GRIPPER_OPEN - GRIPPER_CLOSED)
GRIPPER_OPEN_ABOVE = GRIPPER_CLOSED + 0.75 * (GRIPPER_OPEN - GRIPPER_CLOSED)

# Joint limits [rad] (the 7 arm joints are the same for both arms); gripper in metres.
ARM_LIMITS = np.array(
    [[-2.8, 2.8], [-1.9, 1.9], [-2.8, 2.8], [0.05, 2.9], [-2.8, 2.8], [-1.6, 2.9], [-2.9, 2.9]], dtype=np.float64
)
GRIPPER_LIMITS = np.array([GRIPPER_CLOSED, GRIPPER_OPEN])
# Home: upper arm leaning forward, elbow bent, hand pointing down ~20 cm over the table.
HOME_ARM = np.array([0.0, 0.45, 0.0, 1.75, 0.0, 0.94, 0.0])

UPPER_ARM = 0.45
FOREARM = 0.42
HAND_TO_GRASP = 0.17  # wrist joint to the point between the fingertips


@dataclass(frozen=True)
class PhysicsConfig:
    """Physics rate: 30 Hz control, `substeps` physics steps per control step."""

    substeps: int = 8
    kp_arm: float = 600.0
    kv_arm: float = 60.0
    kp_gripper: float = 400.0

    @property
    def timestep(self) -> float:
        return 1.0 / (CONTROL_RATE_HZ * self.substeps)


def joint_limits() -> np.ndarray:
    """(16, 2) lower/upper limits in JOINT_NAMES order."""
    per_arm = np.vstack([ARM_LIMITS, GRIPPER_LIMITS[None]])
    return np.vstack([per_arm, per_arm])


def home_action() -> np.ndarray:
    arm = np.concatenate([HOME_ARM, [GRIPPER_OPEN]])
    right = arm.copy()
    return np.concatenate([arm, right])


def _arm_xml(side: str, rgba: str) -> str:
    y = SHOULDER_Y if side == "left" else -SHOULDER_Y
    lim = ARM_LIMITS
    j = [f"{side}_{n}" for n in ARM_JOINTS]
    g = f'contype="0" conaffinity="0" rgba="{rgba}"'
    return f"""
    <body name="{side}_base" pos="{BASE_X} {y} {BASE_Z}">
      <geom type="cylinder" size="0.06 0.04" {g}/>
      <body name="{side}_link1" pos="0 0 0.08" gravcomp="1">
        <joint name="{j[0]}" axis="0 0 1" range="{lim[0, 0]} {lim[0, 1]}"/>
        <geom type="cylinder" size="0.05 0.05" {g}/>
        <inertial pos="0 0 0" mass="1.5" diaginertia="0.01 0.01 0.01"/>
        <body name="{side}_link2" pos="0 0 0.06" gravcomp="1">
          <joint name="{j[1]}" axis="0 1 0" range="{lim[1, 0]} {lim[1, 1]}"/>
          <geom type="sphere" size="0.055" {g}/>
          <inertial pos="0 0 0.1" mass="1.2" diaginertia="0.01 0.01 0.005"/>
          <body name="{side}_link3" pos="0 0 0" gravcomp="1">
            <joint name="{j[2]}" axis="0 0 1" range="{lim[2, 0]} {lim[2, 1]}"/>
            <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.045" {g}/>
            <inertial pos="0 0 0.2" mass="1.2" diaginertia="0.02 0.02 0.004"/>
            <body name="{side}_link4" pos="0 0 {UPPER_ARM}" gravcomp="1">
              <joint name="{j[3]}" axis="0 1 0" range="{lim[3, 0]} {lim[3, 1]}"/>
              <geom type="sphere" size="0.05" {g}/>
              <inertial pos="0 0 0.1" mass="0.9" diaginertia="0.01 0.01 0.003"/>
              <body name="{side}_link5" pos="0 0 0" gravcomp="1">
                <joint name="{j[4]}" axis="0 0 1" range="{lim[4, 0]} {lim[4, 1]}"/>
                <geom type="capsule" fromto="0 0 0 0 0 {FOREARM}" size="0.04" {g}/>
                <inertial pos="0 0 0.18" mass="0.9" diaginertia="0.012 0.012 0.002"/>
                <body name="{side}_link6" pos="0 0 {FOREARM}" gravcomp="1">
                  <joint name="{j[5]}" axis="0 1 0" range="{lim[5, 0]} {lim[5, 1]}"/>
                  <geom type="sphere" size="0.04" {g}/>
                  <inertial pos="0 0 0" mass="0.5" diaginertia="0.002 0.002 0.002"/>
                  <body name="{side}_hand" pos="0 0 0" gravcomp="1">
                    <joint name="{j[6]}" axis="0 0 1" range="{lim[6, 0]} {lim[6, 1]}"/>
                    <geom type="cylinder" fromto="0 0 0 0 0 0.08" size="0.035" {g}/>
                    <geom type="box" pos="0 0 0.095" size="0.03 0.065 0.015" {g}/>
                    <inertial pos="0 0 0.08" mass="0.6" diaginertia="0.002 0.002 0.002"/>
                    <site name="{side}_grasp" pos="0 0 {HAND_TO_GRASP}" size="0.008" rgba="1 0 0 0"/>
                    <camera name="{side}_wrist" pos="0.075 0 0.07" xyaxes="0 1 0 0.94 0 0.34" fovy="80"/>
                    <body name="{side}_finger_a" pos="0 0 0.11" gravcomp="1">
                      <joint name="{side}_gripper" type="slide" axis="0 1 0" range="{GRIPPER_CLOSED} {GRIPPER_OPEN}"
                             armature="0.01" damping="2"/>
                      <geom type="box" pos="0 0.008 0.04" size="0.012 0.006 0.04" {g}/>
                      <inertial pos="0 0 0.04" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>
                    </body>
                    <body name="{side}_finger_b" pos="0 0 0.11" gravcomp="1">
                      <joint name="{side}_gripper_mirror" type="slide" axis="0 -1 0"
                             range="{GRIPPER_CLOSED} {GRIPPER_OPEN}" armature="0.01" damping="2"/>
                      <geom type="box" pos="0 -0.008 0.04" size="0.012 0.006 0.04" {g}/>
                      <inertial pos="0 0 0.04" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF camera `xyaxes` for a camera at `pos` looking at `target` (world z up in the image)."""
    fwd = target - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return " ".join(f"{v:.4f}" for v in (*right, *up))


def robot_xml(physics: PhysicsConfig) -> tuple[str, str, str]:
    """Return (worldbody, actuator, equality) MJCF fragments of the robot, table and head camera."""
    head_pos = np.array([0.0, 0.0, 1.62])
    head_xy = _look_at_xyaxes(head_pos, np.array([TABLE_CENTER_X, 0.0, TABLE_TOP_Z]))
    tx, ty = TABLE_HALF
    body = f"""
    <geom name="floor" type="plane" size="4 4 0.1" rgba="0.55 0.55 0.5 1" contype="1" conaffinity="3"/>
    <geom name="table" type="box" pos="{TABLE_CENTER_X} 0 {TABLE_TOP_Z - 0.025}" size="{tx} {ty} 0.025"
          rgba="0.72 0.6 0.45 1" contype="3" conaffinity="3" friction="1 0.005 0.0001"/>
    <geom name="torso" type="box" pos="-0.05 0 0.5" size="0.12 0.22 0.5" rgba="0.3 0.32 0.36 1"
          contype="0" conaffinity="0"/>
    <camera name="head" pos="{head_pos[0]} {head_pos[1]} {head_pos[2]}" xyaxes="{head_xy}" fovy="62"/>
    {_arm_xml("left", "0.85 0.85 0.88 1")}
    {_arm_xml("right", "0.85 0.85 0.88 1")}"""
    act = []
    for side in ARMS:
        for name in ARM_JOINTS:
            jn = f"{side}_{name}"
            lo, hi = ARM_LIMITS[ARM_JOINTS.index(name)]
            act.append(
                f'<position name="act_{jn}" joint="{jn}" kp="{physics.kp_arm}" kv="{physics.kv_arm}" '
                f'ctrlrange="{lo} {hi}" forcerange="-150 150"/>'
            )
        act.append(
            f'<position name="act_{side}_gripper" joint="{side}_gripper" kp="{physics.kp_gripper}" '
            f'kv="20" ctrlrange="{GRIPPER_CLOSED} {GRIPPER_OPEN}" forcerange="-40 40"/>'
        )
    eq = [f'<joint joint1="{s}_gripper" joint2="{s}_gripper_mirror" polycoef="0 1 0 0 0"/>' for s in ARMS]
    return body, "\n".join(act), "\n".join(eq)


def model_header(physics: PhysicsConfig, max_image: int = 224) -> str:
    """`<option>` and `<visual>` blocks: implicit integrator, no shadows/reflections, no MSAA."""
    return f"""
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{physics.timestep:.6f}" integrator="implicitfast" cone="pyramidal" iterations="30"
          ls_iterations="8"/>
  <visual>
    <global offwidth="{max_image}" offheight="{max_image}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <joint damping="1.0" armature="0.05" solreflimit="0.01 1"/>
    <geom solref="0.005 1" condim="4"/>
  </default>"""


ACTION_JOINTS: tuple[str, ...] = JOINT_NAMES
CAMERAS: tuple[str, ...] = CAMERA_NAMES
