"""The multi-task environment: one MuJoCo model per (env, task), 30 Hz joint-position control.

`make_env(task, seed, render=...)` -> env; `env.reset(seed) -> obs`;
`env.step(action16) -> obs, reward, terminated, truncated, info`.

Observation dict:
  joint_position  (16,) float64, JOINT_NAMES order, gripper = finger opening [m]
  instruction     str
  images          {head, left_wrist, right_wrist: (S, S, 3) uint8}  only when rendering
  sim_state       (STATE_DIM,) float32  SIM-ONLY privileged state (never exists on hardware)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from lwd_protocol.policy_io import SIM_STATE_JOINT_OFFSET
from lwd_protocol.robot_spec import ACTION_DIM, ARM_JOINT_DIMS, GRIPPER_DIMS, JOINT_NAMES
from lwd_protocol.tasks import TASK_NAMES
from lwd_sim.grasp import Graspable, GraspManager
from lwd_sim.render import CameraRig
from lwd_sim.robot import (
    ARMS,
    GRIPPER_CLOSE_BELOW,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    GRIPPER_OPEN_ABOVE,
    TABLE_TOP_Z,
    PhysicsConfig,
    home_action,
    joint_limits,
    model_header,
    robot_xml,
)
from lwd_sim.tasks import make_task
from lwd_sim.tasks.base import NUM_TASK_FLAGS, Task

MAX_OBJECTS = 10
MAX_ARTICULATIONS = 4
MAX_REFERENTS = 2  # instructions name at most a first and a second object
MAX_FIXTURES = 3  # randomly placed static bodies per task (board, juicer, tray, ...)
DISTURBANCE_STREAM = 0xD157  # second seed word of the disturbance's own random stream (not the scene's)
# SIM-ONLY privileged state layout (fixed across tasks).
STATE_LAYOUT: dict[str, slice] = {
    "task_onehot": slice(0, 8),
    "subtask_done": slice(8, 16),
    "subtask_fraction": slice(16, 17),
    "held": slice(17, 19),
    "grasp_sites": slice(19, 25),
    "objects": slice(25, 25 + 8 * MAX_OBJECTS),  # per slot: pos(3) quat(4) active(1)
    "articulations": slice(105, 105 + MAX_ARTICULATIONS),
    "task_flags": slice(109, 109 + NUM_TASK_FLAGS),
    # Per object slot: what the instruction names (1 = the target, 2 = a second, ordered referent; 0 = not named),
    # so a state-only policy can ground "the red can" without the text (the colours are not in the state).
    "referents": slice(117, 117 + MAX_OBJECTS),
    # Proprioception: the measured joint positions (what /joint_states carries), so absolute joint
    # targets can be predicted relative to where the arms are.
    "joint_positions": slice(SIM_STATE_JOINT_OFFSET, SIM_STATE_JOINT_OFFSET + len(JOINT_NAMES)),
    # The named objects' poses in the order the task still works on them (Task.referent_order: the
    # object of the current step first): pos(3) quat(4) present(1), so a state policy need not look
    # up "the slot whose referent flag is 1", nor gate it on progress, itself (real policies ground
    # the instruction in the images).
    "referent_poses": slice(
        SIM_STATE_JOINT_OFFSET + len(JOINT_NAMES), SIM_STATE_JOINT_OFFSET + len(JOINT_NAMES) + 8 * MAX_REFERENTS
    ),
}
# The task's randomly placed fixtures (Task.fixtures order): world xy each, so a state policy knows
# where the board or the tray is (their placement is jittered per episode like the objects').
_FIXTURES_START = STATE_LAYOUT["referent_poses"].stop
STATE_LAYOUT["fixtures"] = slice(_FIXTURES_START, _FIXTURES_START + 2 * MAX_FIXTURES)
# Per object slot: the xy it started the episode at, where an arm puts a used object back (the
# expert's stow). Without it the target of every put-back is hidden state: a state-only policy
# cannot know where the caddy or the knife came from once it has moved them.
STATE_LAYOUT["homes"] = slice(STATE_LAYOUT["fixtures"].stop, STATE_LAYOUT["fixtures"].stop + 2 * MAX_OBJECTS)
# Per arm: the start xy of the object it holds (zeros when empty or a handle), i.e. where a stow puts
# it back. The same numbers are in "homes", but at the held object's slot: reading them there means
# gating every slot on "is this the one in my hand", which a state MLP trained on long demos does
# not learn (cocktail's policy carried a poured bottle around instead of putting it back, session 14).
STATE_LAYOUT["held_homes"] = slice(STATE_LAYOUT["homes"].stop, STATE_LAYOUT["homes"].stop + 4)
STATE_DIM = STATE_LAYOUT["held_homes"].stop


@dataclass
class EnvConfig:
    render: bool = False
    image_size: int = 128
    max_steps: int | None = None  # None: the task's own time limit
    max_target_step: float = 0.12  # [rad/tick] cap on arm joint-target change (3.6 rad/s at 30 Hz)
    # Execution disturbance (DART, Laskey et al. 2017): AR(1) noise of this stationary std [rad] is
    # added to the arm joint targets the plant receives, not to the command, so an expert's demo
    # visits the small deviations a learned policy makes and records how the expert corrects them.
    disturbance: float = 0.0
    disturbance_correlation: float = 0.9
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)


class LwdSimEnv:
    """Simulated dual-arm robot doing one task of the suite (see module docstring)."""

    def __init__(self, task: str | Task, seed: int = 0, config: EnvConfig | None = None) -> None:
        self.config = config or EnvConfig()
        self.task = make_task(task) if isinstance(task, str) else task
        self.task_id = TASK_NAMES.index(self.task.name)
        spec = self.task.scene()
        if len(self.task.fixtures) > MAX_FIXTURES:
            n = len(self.task.fixtures)
            raise ValueError(f"task {self.task.name} declares {n} fixtures; the state holds {MAX_FIXTURES}")
        if len(spec.objects) > MAX_OBJECTS or len(spec.articulations) > MAX_ARTICULATIONS:
            raise ValueError(f"task {self.task.name} declares too many objects/articulations")
        self.spec = spec
        self.model = mujoco.MjModel.from_xml_string(self._build_xml(spec))
        self.data = mujoco.MjData(self.model)
        m = self.model
        jid = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in JOINT_NAMES]
        self._qpos_adr = np.array([m.jnt_qposadr[j] for j in jid])
        self._qvel_adr = np.array([m.jnt_dofadr[j] for j in jid])
        self._act_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, f"act_{j}") for j in JOINT_NAMES])
        self.limits = joint_limits()
        self._arm_idx = np.array(ARM_JOINT_DIMS)
        self._gripper_idx = np.array(GRIPPER_DIMS)
        self.body = {m.body(i).name: i for i in range(m.nbody)}
        self.hand_body = tuple(self.body[f"{a}_hand"] for a in ARMS)
        self.grasp_site = tuple(mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, f"{a}_grasp") for a in ARMS)
        self.obj_index = {o.name: i for i, o in enumerate(spec.objects)}
        self._obj_qadr = {
            o.name: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{o.name}_free")]
            for o in spec.objects
        }
        self._obj_vadr = {
            o.name: m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{o.name}_free")]
            for o in spec.objects
        }
        self._geom = {o.name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{o.name}_geom") for o in spec.objects}
        self._art_qadr = [
            m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, a.joint)] for a in spec.articulations
        ]
        self.grasp_names = [o.name for o in spec.objects] + [a.body for a in spec.articulations]
        graspables = []
        for k, name in enumerate(self.grasp_names):
            if k < len(spec.objects):
                o = spec.objects[k]
                points, heavy = (o.grasp_point(0), o.grasp_point(1)), o.heavy
            else:
                a = spec.articulations[k - len(spec.objects)]
                points, heavy = (np.array(a.grasp_local), np.array(a.grasp_local)), False
            welds = tuple(mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_EQUALITY, f"weld_{arm}_{name}") for arm in ARMS)
            graspables.append(Graspable(self.body[name], points, heavy, welds))
        gq = tuple(int(self._qpos_adr[JOINT_NAMES.index(f"{a}_gripper")]) for a in ARMS)
        self.grasp = GraspManager(m, self.hand_body, self.grasp_site, gq, graspables)
        self.active_objects: list[str] = []
        self.home_pose: dict[str, np.ndarray] = {}
        # Tasks recolour geoms per episode (identities, a cut fruit, a filled glass); reset starts from these.
        self._default_rgba = self.model.geom_rgba.copy()
        self._default_body_pos = self.model.body_pos.copy()
        self._rig: CameraRig | None = None
        self._seed = seed
        self.steps = 0
        self.episode_count = 0
        self.status = None
        self.reset(seed)

    # --- model -------------------------------------------------------------------------------
    def _build_xml(self, spec) -> str:
        body, act, eq = robot_xml(self.config.physics)
        objects = "\n".join(o.xml(spec.park_position(i)) for i, o in enumerate(spec.objects))
        welds = "\n".join(
            f'<weld name="weld_{arm}_{name}" body1="{arm}_hand" body2="{name}" active="false" solref="0.01 1"/>'
            for name in [o.name for o in spec.objects] + [a.body for a in spec.articulations]
            for arm in ARMS
        )
        header = model_header(self.config.physics, max(224, self.config.image_size))
        return f"""<mujoco model="lwd_{self.task.name}">{header}
  <worldbody>
    <light pos="0.3 0 2.5" dir="0 0 -1" castshadow="false" diffuse="0.6 0.6 0.6"/>
    {body}
    {spec.fixtures_xml}
    {objects}
  </worldbody>
  <equality>{eq}
{welds}</equality>
  <actuator>{act}
{spec.actuators_xml}</actuator>
</mujoco>"""

    # --- gym-like API --------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict:
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        m.geom_rgba[:] = self._default_rgba
        m.body_pos[:] = self._default_body_pos
        home = home_action()
        d.qpos[self._qpos_adr] = home
        d.ctrl[self._act_ids] = home
        for arm in ARMS:  # mirror finger follows the coupled joint
            jm = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{arm}_gripper_mirror")
            d.qpos[m.jnt_qposadr[jm]] = home[JOINT_NAMES.index(f"{arm}_gripper")]
        self.active_objects = []
        for i, o in enumerate(self.spec.objects):
            self.set_obj_pose(o.name, self.spec.park_position(i), 0.0)
        mujoco.mj_forward(m, d)
        self.grasp.reset(d)
        self.instruction = self.task.reset(self, self.rng)
        mujoco.mj_forward(m, d)
        self.home_pose = {n: self.obj_pos(n).copy() for n in self.active_objects}
        self.steps = 0
        self.episode_count += 1
        self.status = self.task.update(self)
        self.last_action = home.copy()
        self._disturbance = np.zeros(len(self._arm_idx))
        self._disturbance_rng = np.random.default_rng([self._seed, DISTURBANCE_STREAM])
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.array(action, dtype=np.float64)  # a copy: the disturbance must not reach the caller's command
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains non-finite values")
        if self.config.disturbance > 0:
            action[self._arm_idx] += self._next_disturbance()
        # Safety clamps: joint limits, then a per-tick target step limit (joint velocity cap)
        # so a wild command cannot slam a joint through its (soft) limit.
        action = np.clip(action, self.limits[:, 0], self.limits[:, 1])
        step = self.config.max_target_step
        action[self._arm_idx] = np.clip(
            action[self._arm_idx], self.last_action[self._arm_idx] - step, self.last_action[self._arm_idx] + step
        )
        # The grippers are open/close devices (a parallel jaw on a digital command) with hysteresis:
        # an open gripper closes on a command below a quarter stroke, a closed one opens on a command
        # above three quarters, anything between keeps the current state. A learned policy's blurred
        # target drifting around mid-stroke then holds what it holds instead of dropping it.
        grip = action[self._gripper_idx]
        was_open = self.last_action[self._gripper_idx] >= GRIPPER_OPEN
        opens = np.where(was_open, grip >= GRIPPER_CLOSE_BELOW, grip > GRIPPER_OPEN_ABOVE)
        action[self._gripper_idx] = np.where(opens, GRIPPER_OPEN, GRIPPER_CLOSED)
        self.last_action = action
        self.data.ctrl[self._act_ids] = action
        mujoco.mj_step(self.model, self.data, nstep=self.config.physics.substeps)
        self.grasp.update(self.data)
        self.steps += 1
        self.status = self.task.update(self)
        limit = self.config.max_steps or self.task.max_steps
        terminated = self.status.success or self.status.failed
        truncated = not terminated and self.steps >= limit
        reward = 1.0 if self.status.success else 0.0
        return self.observe(), reward, terminated, truncated, self.info(truncated)

    def _next_disturbance(self) -> np.ndarray:
        a, std = self.config.disturbance_correlation, self.config.disturbance
        step = self._disturbance_rng.normal(0.0, std * np.sqrt(1.0 - a * a), self._disturbance.shape)
        self._disturbance = a * self._disturbance + step
        return self._disturbance

    def info(self, truncated: bool = False) -> dict:
        s = self.status
        return {
            "subtask_index": s.subtask_index,
            "num_subtasks": self.task.num_subtasks,
            "success": s.success,
            "failed": s.failed,
            "failure_reason": s.reason,
            "timeout": truncated,
            "steps": self.steps,
            "score": s.subtask_index / self.task.num_subtasks,
        }

    def observe(self) -> dict:
        obs = {"joint_position": self.joint_position(), "instruction": self.instruction, "sim_state": self.sim_state()}
        if self.config.render:
            obs["images"] = self.render()
        return obs

    def render(self, size: int | None = None) -> dict[str, np.ndarray]:
        """Render the three cameras now (lazily creates the GL context)."""
        size = size or self.config.image_size
        if self._rig is None or self._rig.size != size:
            if self._rig is not None:
                self._rig.close()
            self._rig = CameraRig(self.model, size)
        return self._rig.render(self.data)

    def close(self) -> None:
        if self._rig is not None:
            self._rig.close()
            self._rig = None

    # --- state access used by tasks and experts --------------------------------------------------
    def forward(self) -> None:
        """Recompute derived quantities (positions) after editing the state directly."""
        mujoco.mj_forward(self.model, self.data)

    def joint_position(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    def joint_velocity(self) -> np.ndarray:
        return self.data.qvel[self._qvel_adr].copy()

    def obj_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.body[name]]

    def obj_mat(self, name: str) -> np.ndarray:
        return self.data.xmat[self.body[name]].reshape(3, 3)

    def obj_up(self, name: str) -> np.ndarray:
        return self.obj_mat(name)[:, 2]

    def obj_vel(self, name: str) -> np.ndarray:
        a = self._obj_vadr[name]
        return self.data.qvel[a : a + 3]

    def articulation_qpos(self, index: int) -> float:
        return float(self.data.qpos[self._art_qadr[index]])

    def held_name(self, arm: int) -> str | None:
        h = self.grasp.held[arm]
        return self.grasp_names[h] if h >= 0 else None

    def holder_of(self, name: str) -> int:
        """Arm index holding `name`, or -1."""
        for arm in (0, 1):
            if self.held_name(arm) == name:
                return arm
        return -1

    def grasp_point(self, name: str, arm: int) -> np.ndarray:
        return self.grasp.grasp_point_world(self.data, self.grasp_names.index(name), arm)

    def set_obj_pose(self, name: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        a = self._obj_qadr[name]
        self.data.qpos[a : a + 3] = pos
        self.data.qpos[a + 3 : a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        v = self._obj_vadr[name]
        self.data.qvel[v : v + 6] = 0.0

    def place_on_table(self, name: str, xy: np.ndarray, yaw: float = 0.0, surface_z: float = TABLE_TOP_Z) -> None:
        """Put an object slot at rest on a surface and mark it active."""
        o = self.spec.objects[self.obj_index[name]]
        self.set_obj_pose(name, np.array([xy[0], xy[1], surface_z + o.half_height + 0.001]), yaw)
        if name not in self.active_objects:
            self.active_objects.append(name)

    def set_rgba(self, name: str, rgba: tuple[float, ...]) -> None:
        self.model.geom_rgba[self._geom[name]] = rgba

    def set_geom_rgba(self, geom: str, rgba: tuple[float, ...]) -> None:
        """Recolour a named fixture geom (e.g. a glass that now holds a drink)."""
        gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, geom)
        if gid < 0:
            raise KeyError(f"no geom named {geom!r} in the {self.task.name} scene")
        self.model.geom_rgba[gid] = rgba

    def objspec(self, name: str):
        return self.spec.objects[self.obj_index[name]]

    def sim_state(self) -> np.ndarray:
        """SIM-ONLY privileged low-dim state (layout in STATE_LAYOUT); never available on hardware."""
        s = np.zeros(STATE_DIM, dtype=np.float32)
        s[self.task_id] = 1.0
        idx = self.status.subtask_index if self.status else 0
        s[8 : 8 + min(idx, 8)] = 1.0
        s[16] = idx / self.task.num_subtasks
        s[17:19] = [h >= 0 for h in self.grasp.held]
        s[19:25] = self.data.site_xpos[list(self.grasp_site)].ravel()
        base = STATE_LAYOUT["objects"].start
        for i, o in enumerate(self.spec.objects):
            b = self.body[o.name]
            s[base + 8 * i : base + 8 * i + 3] = self.data.xpos[b]
            s[base + 8 * i + 3 : base + 8 * i + 7] = self.data.xquat[b]
            s[base + 8 * i + 7] = o.name in self.active_objects
        a0 = STATE_LAYOUT["articulations"].start
        for k in range(len(self._art_qadr)):
            s[a0 + k] = self.articulation_qpos(k)
        s[STATE_LAYOUT["task_flags"]] = self.task.flags
        r0 = STATE_LAYOUT["referents"].start
        p0 = STATE_LAYOUT["referent_poses"].start
        for name, value in self.task.referents().items():
            s[r0 + self.obj_index[name]] = value
        for rank, name in enumerate(self.task.referent_order(self)[:MAX_REFERENTS]):
            b = self.body[name]
            pose = s[p0 + 8 * rank : p0 + 8 * rank + 8]
            pose[:3], pose[3:7], pose[7] = self.data.xpos[b], self.data.xquat[b], 1.0
        s[STATE_LAYOUT["joint_positions"]] = self.joint_position()
        f0 = STATE_LAYOUT["fixtures"].start
        for i, name in enumerate(self.task.fixtures):
            s[f0 + 2 * i : f0 + 2 * i + 2] = self.data.xpos[self.body[name]][:2]
        h0 = STATE_LAYOUT["homes"].start
        for i, o in enumerate(self.spec.objects):
            if o.name in self.home_pose:
                s[h0 + 2 * i : h0 + 2 * i + 2] = self.home_pose[o.name][:2]
        hh = STATE_LAYOUT["held_homes"].start
        for arm in (0, 1):
            held = self.held_name(arm)
            if held in self.home_pose:
                s[hh + 2 * arm : hh + 2 * arm + 2] = self.home_pose[held][:2]
        return s


def make_env(
    task: str, seed: int = 0, render: bool = False, image_size: int = 128, max_steps: int | None = None
) -> LwdSimEnv:
    """Build an env for one of lwd_protocol.tasks.TASK_NAMES."""
    return LwdSimEnv(task, seed, EnvConfig(render=render, image_size=image_size, max_steps=max_steps))
