from setuptools import find_packages, setup

package_name = "lwd_protocol"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["ros_interfaces/**/*.msg", "ros_interfaces/**/*.srv"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["numpy", "mcap", "mcap-ros2-support", "zstandard", "cryptography"],
    zip_safe=False,
    description="LWD Fleet wire protocol shared by robots and the cloud learner",
    license="Apache-2.0",
    python_requires=">=3.10",
)
