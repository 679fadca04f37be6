"""Pour events: the "liquid" abstraction shared by the long-horizon tasks.

A held container pours when it has stayed tilted past POUR_TILT (its up-axis z below cos 70 deg)
for POUR_TICKS consecutive ticks (liquid takes time to run out); it pours into the target its
centre is then within POUR_RADIUS (xy) of and above the base of. One tilt = one event; the
container must come back upright (up-axis z > 0.7) before it can pour again. The dwell also means
the expert's demonstrations turn back well past the threshold (it keeps tilting toward its full
angle until the pour registers), so a policy that imitates them roughly still crosses it.
Tasks compare each event to the next expected one; an unexpected pour is unrecoverable
(hot water on dry tea, the wrong liquor in the shaker...).
"""

from __future__ import annotations

import numpy as np

POUR_TILT = 0.34
POUR_RADIUS = 0.1
POUR_TICKS = 10  # 1/3 s at 30 Hz


class PourTracker:
    def __init__(self, sources: tuple[str, ...], targets: tuple[str, ...]) -> None:
        self.sources = sources
        self.targets = targets
        self._tilted: dict[str, bool] = {}
        self._tilt_ticks: dict[str, int] = {}

    def reset(self) -> None:
        self._tilted = {s: False for s in self.sources}
        self._tilt_ticks = {s: 0 for s in self.sources}

    def latched(self, source: str) -> bool:
        """True while `source` has poured and not yet come back upright."""
        return self._tilted.get(source, False)

    def events(self, env) -> list[tuple[str, str]]:
        """(source, target) pairs that poured on this tick."""
        out = []
        for src in self.sources:
            if src not in env.active_objects:
                continue
            up_z = env.obj_up(src)[2]
            if self._tilted[src]:
                if up_z > 0.7:
                    self._tilted[src] = False
                continue
            if up_z >= POUR_TILT or env.holder_of(src) < 0:
                self._tilt_ticks[src] = 0
                continue
            self._tilt_ticks[src] += 1
            if self._tilt_ticks[src] < POUR_TICKS:
                continue
            self._tilted[src], self._tilt_ticks[src] = True, 0
            p = env.obj_pos(src)
            best, best_d = None, POUR_RADIUS
            for tgt in self.targets:
                if tgt == src:
                    continue
                t = env.obj_pos(tgt)
                d = float(np.linalg.norm(p[:2] - t[:2]))
                if d < best_d and p[2] > t[2]:
                    best, best_d = tgt, d
            out.append((src, best or "table"))
        return out
