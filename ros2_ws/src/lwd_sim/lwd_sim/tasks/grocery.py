"""Shared pieces of the grocery tasks: product slots with randomised identities.

Each grocery scene declares BOXES + CANS product slots; a reset activates 3-5 of them with
distinct colours, so "the red can" names exactly one object among distractors.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.scene import ObjSpec
from lwd_sim.tasks.base import PALETTE

KINDS = {"box": ("box", (0.025, 0.035, 0.055)), "can": ("cylinder", (0.03, 0.05))}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")


def product_slots(n_box: int = 3, n_can: int = 3) -> list[ObjSpec]:
    out = []
    for kind, n in (("box", n_box), ("can", n_can)):
        shape, size = KINDS[kind]
        out += [ObjSpec(f"{kind}{i}", shape, size, PALETTE["white"], mass=0.15) for i in range(n)]
    return out


def assign_products(env, rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """Pick `count` slots, give them distinct colour+kind names; return (slot, colour, kind)."""
    slots = [o.name for o in env.spec.objects if o.name[:-1] in KINDS]
    chosen = [slots[i] for i in rng.permutation(len(slots))[:count]]
    colours = rng.permutation(len(COLOURS))
    out = []
    for slot, ci in zip(chosen, colours, strict=False):
        colour = COLOURS[ci]
        env.set_rgba(slot, PALETTE[colour])
        out.append((slot, colour, slot[:-1]))
    return out
