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
    install_requires=["setuptools", "numpy", "onnxruntime", "lwd-protocol"],
    extras_require={"test": ["onnx", "hypothesis", "pytest"]},
    zip_safe=False,
    maintainer="LWD Fleet developers",
    description="LWD Fleet robot-side ROS 2 nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_driver = lwd_fleet.drivers.sim_driver:main",
        ],
    },
)
