"""The robot the fleet runs: a dual-arm manipulator like the paper's Agibot G1.

Two 7-DoF arms with parallel-jaw grippers (16-D joint-position action), three RGB cameras,
30 Hz joint-position control, action chunks of H=30 steps. Joint *limits* belong to each
robot's description (sim model or hardware params YAML); the names and shapes here are the
contract every policy artifact and episode must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
LEFT_ARM_JOINTS = tuple(f"left_{j}" for j in ARM_JOINTS)
RIGHT_ARM_JOINTS = tuple(f"right_{j}" for j in ARM_JOINTS)
JOINT_NAMES: tuple[str, ...] = (*LEFT_ARM_JOINTS, "left_gripper", *RIGHT_ARM_JOINTS, "right_gripper")
CAMERA_NAMES: tuple[str, ...] = ("head", "left_wrist", "right_wrist")

ACTION_DIM = len(JOINT_NAMES)
CHUNK_HORIZON = 30
CONTROL_RATE_HZ = 30.0

# Action dims of the 14 arm joints (grippers excluded): what relative (delta) actions offset.
ARM_JOINT_DIMS: tuple[int, ...] = tuple(i for i, name in enumerate(JOINT_NAMES) if not name.endswith("gripper"))
# Action dims of the two grippers (finger opening in metres).
GRIPPER_DIMS: tuple[int, ...] = tuple(i for i, name in enumerate(JOINT_NAMES) if name.endswith("gripper"))

# Index ranges of each arm inside the 16-D action, grippers included.
LEFT_ARM_SLICE = slice(0, 8)
RIGHT_ARM_SLICE = slice(8, 16)


@dataclass(frozen=True)
class RobotSpec:
    """Shapes shared by the controller, the recorder and the policy artifact."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    camera_names: tuple[str, ...] = CAMERA_NAMES
    chunk_horizon: int = CHUNK_HORIZON
    control_rate_hz: float = CONTROL_RATE_HZ
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)


DEFAULT_ROBOT_SPEC = RobotSpec()
