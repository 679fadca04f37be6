"""The flywheel on one machine: cloud stack + simulated ROS 2 fleet + learner, offline then online.

`lwd flywheel` (what `make demo` runs) wires the real parts together on 127.0.0.1:
stack.CloudStack (mosquitto, S3, Coordinator, identities, the admin signing key), fleet.RosFleet
(each robot = `lwd-robot` with the seven robot nodes over DDS in its own ROS domain), and
learner_loop.FlywheelLearner (SFT -> offline DIVL+QAM -> publish -> online rounds on 1:1 mixed
replay fed by the Coordinator's snapshots -> publish every N updates). progress.py draws the live
view; report.py writes the report directory.
"""
