"""LWD Fleet robot side: ROS 2 nodes that run on every robot. Never imports jax."""
