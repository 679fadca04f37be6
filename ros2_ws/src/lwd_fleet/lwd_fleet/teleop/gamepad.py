"""PygameGamepad: read a gamepad through SDL (pygame wheel), headless, as sensor_msgs/Joy values.

SDL's GameController API gives every known pad the same button/axis order, so the values are
published exactly like the ROS 2 ``joy`` package's ``game_controller_node``: axes scaled to
[-1, 1] and inverted (stick left/up = +1; triggers 0 at rest, -1 pressed), buttons 0/1 in SDL
GameController order. A pad SDL does not know as a game controller is read through the raw
joystick API instead (device-specific order, logged). No display is needed:
``SDL_VIDEODRIVER=dummy``; ``SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS=1`` keeps events flowing
without a focused window. Pads may be plugged in or out at any time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

CONTROLLER_AXES = 6  # SDL_CONTROLLER_AXIS_MAX
CONTROLLER_BUTTONS = 21  # SDL_CONTROLLER_BUTTON_MAX (SDL 2.0.14+)


@dataclass(frozen=True)
class GamepadState:
    name: str
    axes: list[float]
    buttons: list[int]
    layout: str  # "game_controller" (canonical order) or "joystick" (device order)


def init_sdl() -> Any:
    """Import pygame with a headless SDL and the joystick subsystems initialised; returns pygame."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame
    from pygame._sdl2 import controller

    pygame.display.init()  # the event queue needs the (dummy) video subsystem
    pygame.joystick.init()
    controller.init()
    return pygame


def _scale(raw: int) -> float:
    """SDL int16 axis -> ROS convention (inverted, [-1, 1]) as game_controller_node does."""
    return -max(-32767, min(32767, int(raw))) / 32767.0


class PygameGamepad:
    """Poll with ``read()`` from the thread that created it (SDL's event queue is per process)."""

    def __init__(self, index: int = 0) -> None:
        self.pygame = init_sdl()
        from pygame._sdl2 import controller

        self._controller_mod = controller
        self.index = int(index)
        self._pad: Any = None
        self._joy: Any = None
        self._instance: int | None = None
        self.events: list[str] = []  # connect/disconnect messages for the node to log

    @property
    def connected(self) -> bool:
        return self._pad is not None or self._joy is not None

    def read(self) -> GamepadState | None:
        """Current pad state, or None while no pad is connected. Never blocks."""
        pg = self.pygame
        for event in pg.event.get((pg.JOYDEVICEADDED, pg.JOYDEVICEREMOVED)):
            if event.type == pg.JOYDEVICEREMOVED and event.instance_id == self._instance:
                self.events.append(f"gamepad {self._instance} disconnected")
                self._close()
        pg.event.pump()
        if not self.connected:
            self._open()
        if self._pad is not None:
            if not self._pad.attached():
                self._close()
                return None
            axes = [_scale(self._pad.get_axis(i)) for i in range(CONTROLLER_AXES)]
            buttons = [int(bool(self._pad.get_button(i))) for i in range(CONTROLLER_BUTTONS)]
            return GamepadState(str(self._pad.name), axes, buttons, "game_controller")
        if self._joy is not None:
            axes = [-float(self._joy.get_axis(i)) for i in range(self._joy.get_numaxes())]
            buttons = [int(self._joy.get_button(i)) for i in range(self._joy.get_numbuttons())]
            return GamepadState(str(self._joy.get_name()), axes, buttons, "joystick")
        return None

    def close(self) -> None:
        self._close()

    def _open(self) -> None:
        pg, c = self.pygame, self._controller_mod
        if pg.joystick.get_count() <= self.index:
            return
        if c.is_controller(self.index):
            self._pad = c.Controller(self.index)
            self._instance = self._pad.as_joystick().get_instance_id()
            self.events.append(f"gamepad {self._pad.name!r} connected (SDL game controller layout)")
        else:
            self._joy = pg.joystick.Joystick(self.index)
            self._instance = self._joy.get_instance_id()
            self.events.append(
                f"gamepad {self._joy.get_name()!r} connected as a raw joystick: device-specific button order, "
                "check the mapping parameters"
            )

    def _close(self) -> None:
        for dev in (self._pad, self._joy):
            if dev is not None:
                with contextlib.suppress(Exception):  # already detached
                    dev.quit()
        self._pad = self._joy = self._instance = None
