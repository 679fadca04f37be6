# Robot image: ROS 2 Kilted from the official image (apt packages, not the PyPI wheels),
# the robot-side packages built with colcon, ONNX Runtime with CUDA. For TensorRT, build
# FROM an NVIDIA TensorRT base with ROS installed instead (see docs in README "Deployment").
# Build from the repository root:  docker build -f docker/robot.Dockerfile -t lwd-robot .
FROM ros:kilted-ros-base

RUN apt-get update && apt-get install -y --no-install-recommends \
        ros-kilted-sensor-msgs ros-kilted-std-srvs ros-kilted-rosgraph-msgs ros-kilted-launch-ros \
        ros-kilted-joy ros-kilted-cv-bridge python3-pip python3-numpy python3-yaml \
        libegl1 libgl1-mesa-dri \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/lwd
COPY constraints.txt requirements/robot.txt ./requirements/
# ROS itself comes from apt above; pip adds only the non-ROS runtime deps, pinned by the same
# constraints.txt as `make setup`, with the GPU build of ORT at the CPU build's pinned version.
RUN ORT=$(grep '^onnxruntime==' requirements/constraints.txt | cut -d= -f3) \
    && grep -v '^ros-kilted' requirements/robot.txt | sed "s/^onnxruntime$/onnxruntime-gpu==${ORT}/" > /tmp/req.txt \
    && pip3 install --break-system-packages --no-cache-dir -c requirements/constraints.txt -r /tmp/req.txt

COPY msg ./msg
COPY launch ./launch
COPY ros2_ws/src ./ros2_ws/src
RUN . /opt/ros/kilted/setup.sh \
    && cd ros2_ws && colcon build --packages-select lwd_msgs lwd_protocol lwd_fleet lwd_sim \
    && rm -rf build log

ENV ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET
COPY docker/robot-entrypoint.sh /usr/local/bin/lwd-robot-entrypoint
ENTRYPOINT ["/usr/local/bin/lwd-robot-entrypoint"]
# driver:=none: on a robot the hardware driver is its own package (docs/technician.md).
CMD ["ros2", "launch", "lwd_fleet", "robot.launch.py", "params_file:=/etc/lwd/robot.yaml", "driver:=none"]
