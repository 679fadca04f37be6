"""Chaos run (issue #8, point 5): the simulated ROS 2 fleet, the cloud services and a learner
process are SIGKILLed and restarted at seeded random moments while the robots keep working.

`lwd chaos` (run.py) is the orchestrator; learner_proc.py is the learner it kills, a small online
learner that resumes from its Orbax checkpoint and never republishes a policy version. The run
checks exactly-once commitment of every produced episode, intact snapshots, strictly increasing
policy versions and the robots' 30 Hz command stream, and writes learner/bench/results/chaos.*.
"""
