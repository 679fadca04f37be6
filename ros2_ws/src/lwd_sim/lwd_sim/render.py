"""Offscreen rendering of the three robot cameras, created lazily so state-only envs never touch GL.

Shadows, reflections and multisampling are off: on CPU (Mesa llvmpipe) they cost ~50x. Pick
the GL backend with MUJOCO_GL=egl|osmesa *before* mujoco is imported; `default_gl_backend()`
sets it when the caller has not.
"""

from __future__ import annotations

import os

import numpy as np

from lwd_protocol.robot_spec import CAMERA_NAMES


def default_gl_backend() -> str:
    """Choose a headless backend unless MUJOCO_GL is set: EGL, else OSMesa."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    return os.environ["MUJOCO_GL"]


class CameraRig:
    """Renders head/left_wrist/right_wrist at `size` x `size` (rgb8)."""

    def __init__(self, model, size: int = 128) -> None:
        import mujoco

        if size > model.vis.global_.offwidth or size > model.vis.global_.offheight:
            raise ValueError(f"image size {size} exceeds the model's offscreen buffer {model.vis.global_.offwidth}")
        self._mujoco = mujoco
        self.size = size
        self.renderer = mujoco.Renderer(model, size, size)
        self._option = mujoco.MjvOption()
        self._camera_ids = {name: self._camera_id(model, name) for name in CAMERA_NAMES}

    def _camera_id(self, model, name: str) -> int:
        cid = self._mujoco.mj_name2id(model, self._mujoco.mjtObj.mjOBJ_CAMERA, name)  # MJCF cameras use protocol names
        if cid < 0:
            raise KeyError(f"camera {name!r} missing from the model")
        return cid

    def render(self, data) -> dict[str, np.ndarray]:
        flags = self._mujoco.mjtRndFlag
        images = {}
        for name, cid in self._camera_ids.items():
            self.renderer.update_scene(data, camera=cid, scene_option=self._option)
            self.renderer.scene.flags[flags.mjRND_SHADOW] = 0
            self.renderer.scene.flags[flags.mjRND_REFLECTION] = 0
            images[name] = self.renderer.render().copy()
        return images

    def close(self) -> None:
        self.renderer.close()
