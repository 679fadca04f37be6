"""LWD Fleet cloud side: learner (DIVL + QAM), replay, coordinator, policy export, admin.

Never imports rclpy: the cloud needs no ROS. Robots and this package meet only through
lwd_protocol (episode files, policy artifacts, MQTT topics, object-store keys).
"""
