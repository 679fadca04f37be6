# Cloud image: Coordinator and the JAX learner (CUDA 12 wheels). No ROS.
# Build from the repository root:  docker build -f docker/learner.Dockerfile -t lwd-learner .
FROM python:3.11-slim

WORKDIR /opt/lwd
COPY constraints.txt requirements/learner.txt requirements/export.txt ./requirements/
# jax[cuda12] pulls the CUDA/cuDNN wheels; the rest is pinned by constraints.txt. export.txt
# (jax2onnx) and onnxruntime build and self-check the policy artifacts the learner publishes.
RUN pip install --no-cache-dir -c requirements/constraints.txt -r requirements/learner.txt \
        -r requirements/export.txt onnxruntime \
    && pip install --no-cache-dir "jax[cuda12]==$(grep '^jax==' requirements/constraints.txt | cut -d= -f3)"

COPY ros2_ws/src/lwd_protocol ./ros2_ws/src/lwd_protocol
COPY msg ./msg
COPY ros2_ws/src/lwd_sim ./ros2_ws/src/lwd_sim
COPY learner ./learner
# lwd_sim: the learner's offline buffer generator and evaluation fleet (MuJoCo, headless).
RUN pip install --no-cache-dir --no-deps ./ros2_ws/src/lwd_protocol ./ros2_ws/src/lwd_sim ./learner

ENTRYPOINT ["lwd"]
CMD ["--help"]
