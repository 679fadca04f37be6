"""VirtualGamepad: an SDL virtual game controller, for tests and bring-up without hardware.

``SDL_JoystickAttachVirtual`` (SDL >= 2.0.14, inside the pygame wheel) creates a device that SDL
treats like a plugged-in pad: the teleop node's PygameGamepad in the *same process* sees real
device-added, axis and button events. Values are set in SDL GameController order (buttons A=0,
B=1, X=2, Y=3, BACK=4, GUIDE=5, START=6, ..., LB=9, RB=10; axes LX, LY, RX, RY, LT, RT), in raw SDL
units (int16; stick left/up negative), so ``set_axis(0, -1.0)`` is a full left deflection.
"""

from __future__ import annotations

import ctypes
import glob
import os

from lwd_fleet.teleop.gamepad import CONTROLLER_AXES, CONTROLLER_BUTTONS, init_sdl

_SDL_JOYSTICK_TYPE_GAMECONTROLLER = 1


def _sdl_library() -> ctypes.CDLL:
    pygame = init_sdl()
    libs = os.path.join(os.path.dirname(pygame.__file__), os.pardir, "pygame.libs")
    candidates = sorted(glob.glob(os.path.join(libs, "libSDL2-2*.so*")))
    if not candidates:
        raise RuntimeError(f"no SDL2 library found next to pygame in {os.path.normpath(libs)}")
    sdl = ctypes.CDLL(candidates[0])  # the copy pygame already loaded: same SDL state
    sdl.SDL_JoystickAttachVirtual.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    sdl.SDL_JoystickAttachVirtual.restype = ctypes.c_int
    sdl.SDL_JoystickDetachVirtual.argtypes = [ctypes.c_int]
    sdl.SDL_JoystickOpen.argtypes = [ctypes.c_int]
    sdl.SDL_JoystickOpen.restype = ctypes.c_void_p
    sdl.SDL_JoystickClose.argtypes = [ctypes.c_void_p]
    sdl.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    sdl.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    sdl.SDL_GetError.restype = ctypes.c_char_p
    return sdl


class VirtualGamepad:
    def __init__(self) -> None:
        self._sdl = _sdl_library()
        index = self._sdl.SDL_JoystickAttachVirtual(
            _SDL_JOYSTICK_TYPE_GAMECONTROLLER, CONTROLLER_AXES, CONTROLLER_BUTTONS, 0
        )
        if index < 0:
            raise RuntimeError(f"SDL_JoystickAttachVirtual failed: {self._sdl.SDL_GetError().decode()}")
        self.index = index
        self._handle = self._sdl.SDL_JoystickOpen(index)
        if not self._handle:
            raise RuntimeError(f"SDL_JoystickOpen failed: {self._sdl.SDL_GetError().decode()}")
        for axis in range(CONTROLLER_AXES):  # sticks centred, triggers released
            self.set_axis(axis, -1.0 if axis >= 4 else 0.0)

    def set_axis(self, axis: int, value: float) -> None:
        """value in [-1, 1], SDL convention (stick left/up = -1; trigger released = -1)."""
        raw = round(max(-1.0, min(1.0, value)) * 32767)
        self._sdl.SDL_JoystickSetVirtualAxis(self._handle, axis, raw)
        self._sdl.SDL_JoystickUpdate()

    def set_button(self, button: int, pressed: bool) -> None:
        self._sdl.SDL_JoystickSetVirtualButton(self._handle, button, 1 if pressed else 0)
        self._sdl.SDL_JoystickUpdate()

    def close(self) -> None:
        if self._handle:
            self._sdl.SDL_JoystickClose(self._handle)
            self._handle = None
            self._sdl.SDL_JoystickDetachVirtual(self.index)
