from glob import glob

from setuptools import find_packages, setup

package_name = "lwd_fleet"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools", "numpy", "onnxruntime", "pyyaml", "lwd-protocol"],
    extras_require={"test": ["onnx", "hypothesis", "pytest"], "cameras": ["opencv-python-headless"]},
    zip_safe=False,
    maintainer="LWD Fleet developers",
    description="LWD Fleet robot-side ROS 2 nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_driver = lwd_fleet.drivers.sim_driver:main",
            "controller = lwd_fleet.nodes.controller_node:main",
            "teleop = lwd_fleet.nodes.teleop_node:main",
            "cameras = lwd_fleet.nodes.camera_node:main",
            "recorder = lwd_fleet.nodes.recorder_node:main",
            "uplink = lwd_fleet.nodes.uplink_node:main",
            "policy_sync = lwd_fleet.nodes.policy_sync_node:main",
            "lwd-robot = lwd_fleet.bringup:main",
        ],
    },
)
