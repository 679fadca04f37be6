"""Run the fleet's services on one machine, on 127.0.0.1 only: tests, benchmarks and the demo.

Each service is a real server process (mosquitto, SeaweedFS, DDS via rclpy) started with
explicit loopback binds, free ports, temp dirs and credentials, and stopped by PID.
Production uses the same clients against MinIO / a managed broker; nothing here is a mock.
"""

from lwd_learner.localstack.mosquitto import MosquittoBroker, MqttIdentity
from lwd_learner.localstack.process import ManagedProcess, free_tcp_port
from lwd_learner.localstack.ros_env import ros_isolated_env
from lwd_learner.localstack.seaweed import S3Identity, SeaweedS3
from lwd_learner.localstack.testca import CertPair, ServerTls, TestCA

__all__ = [
    "CertPair",
    "ManagedProcess",
    "MosquittoBroker",
    "MqttIdentity",
    "S3Identity",
    "SeaweedS3",
    "ServerTls",
    "TestCA",
    "free_tcp_port",
    "ros_isolated_env",
]
