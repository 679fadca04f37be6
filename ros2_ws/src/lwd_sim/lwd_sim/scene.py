"""Scene description a task hands to the env: movable objects, fixtures, articulated parts.

A task declares a fixed set of object *slots* once (so the model is compiled once per env);
reset() re-colours them, parks unused slots off-table and randomises poses. Every graspable
body (free objects and articulated handles such as a drawer or knob) gets one weld equality
per arm, activated by the grasp abstraction in `grasp.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Collision bits: objects (1) collide with each other and fixtures; "tool" geoms (2) only with
# fixtures, so a knife can pass through the fruit it cuts. Fixtures take both (3).
OBJ_BITS = 'contype="1" conaffinity="1"'
TOOL_BITS = 'contype="2" conaffinity="2"'
FIXTURE_BITS = 'contype="3" conaffinity="3"'


@dataclass
class ObjSpec:
    """A free-floating object slot. `size` is box half-extents (x, y, z) or cylinder (r, half-height)."""

    name: str
    shape: str = "box"
    size: tuple[float, ...] = (0.025, 0.025, 0.05)
    rgba: tuple[float, float, float, float] = (0.8, 0.2, 0.2, 1.0)
    mass: float = 0.15
    heavy: bool = False  # needs both grippers: welds only engage when both arms pinch it
    tool: bool = False  # collides with fixtures only (see TOOL_BITS)
    grasp_local: tuple[float, float, float] | None = None  # grasp point in the object frame
    # Per-arm grasp points (left, right) in the object frame, e.g. the two walls of a heavy box.
    grasp_pair: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    extra_xml: str = ""  # extra child geoms (e.g. a knife blade, a glass stem)

    @property
    def half_height(self) -> float:
        return float(self.size[2] if self.shape == "box" else self.size[1])

    def grasp_point(self, arm: int) -> np.ndarray:
        """Grasp point of `arm` (0 left, 1 right) in the object frame; heavy objects are held at both ends."""
        if self.grasp_pair is not None:
            return np.array(self.grasp_pair[arm], dtype=np.float64)
        if self.grasp_local is not None:
            return np.array(self.grasp_local, dtype=np.float64)
        top = self.half_height - 0.02
        if self.heavy:
            hy = self.size[1] - 0.03
            return np.array([0.0, hy if arm == 0 else -hy, top])
        return np.array([0.0, 0.0, top])

    def xml(self, park: np.ndarray) -> str:
        size = " ".join(f"{s:g}" for s in self.size)
        rgba = " ".join(f"{c:g}" for c in self.rgba)
        bits = TOOL_BITS if self.tool else OBJ_BITS
        return (
            f'<body name="{self.name}" pos="{park[0]:g} {park[1]:g} {park[2]:g}">'
            f'<freejoint name="{self.name}_free"/>'
            f'<geom name="{self.name}_geom" type="{self.shape}" size="{size}" rgba="{rgba}" mass="{self.mass:g}" '
            f'{bits} friction="1.2 0.01 0.001"/>{self.extra_xml}</body>'
        )


@dataclass
class Articulation:
    """A graspable articulated body (drawer, knob) defined by raw MJCF inside `xml`."""

    body: str  # name of the graspable body
    joint: str  # its joint (slide or hinge)
    grasp_local: tuple[float, float, float]  # grasp point in the body frame


@dataclass
class SceneSpec:
    objects: list[ObjSpec] = field(default_factory=list)
    fixtures_xml: str = ""  # static geoms / bodies placed in <worldbody>
    articulations: list[Articulation] = field(default_factory=list)
    actuators_xml: str = ""

    def park_position(self, index: int) -> np.ndarray:
        """Where unused slots wait: on the floor far from the table and outside every camera."""
        return np.array([-2.0 - 0.3 * (index % 8), -1.5 + 0.4 * (index // 8), 0.2])
