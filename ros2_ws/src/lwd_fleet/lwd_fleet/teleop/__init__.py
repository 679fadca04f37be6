"""Teleoperation: gamepad -> joint-velocity takeover commands for the controller, and outcome marks.

  * mapping      -- JoyMapping / TeleopMapper: Joy axes+buttons -> per-arm joint velocities, deadman,
                    joint-group toggle, gripper triggers, START+A/B/X outcome chords (pure logic)
  * gamepad      -- PygameGamepad: headless SDL pad reader publishing game_controller_node-style Joy
  * virtual_pad  -- VirtualGamepad: SDL virtual controller for tests and bring-up without hardware

The node is lwd_fleet.nodes.teleop_node; the controller side is lwd_fleet.control.loop.
Importing this package does not import pygame.
"""

from lwd_fleet.teleop.mapping import JoyMapping, TeleopMapper, TeleopOutput

__all__ = ["JoyMapping", "TeleopMapper", "TeleopOutput"]
