from setuptools import find_packages, setup

package_name = "lwd_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml", "README.md"]),
    ],
    install_requires=["numpy", "mujoco>=3.2", "lwd_protocol"],
    zip_safe=False,
    description="LWD Fleet simulated dual-arm robot, tasks, scripted experts and data generator (MuJoCo)",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": ["lwd_sim_generate = lwd_sim.generate:main", "lwd_sim_bench = lwd_sim.bench:main"],
    },
)
