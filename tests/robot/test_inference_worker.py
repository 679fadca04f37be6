"""InferenceWorker: never blocks the caller, newest request wins, results tagged with their step."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lwd_fleet.control.chunking import ChunkExecutor, ExecutorConfig
from lwd_fleet.inference import (
    InferenceRequest,
    InferenceWorker,
    PolicyArtifact,
    PolicyBackend,
    PolicyObservation,
    open_artifact,
)

pytest.importorskip("onnx", reason="the `onnx` package builds the test artifact")
from lwd_fleet.inference.synthetic import drift_policy

H, A = 30, 16
WAIT = 10.0  # generous upper bound for thread hand-offs; no test asserts a duration


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> PolicyArtifact:
    """A real verified artifact (normalisation 0/1), so feeds carry the raw step value."""
    return open_artifact(drift_policy(4, 0.0).write(tmp_path_factory.mktemp("policy") / "v000004"))


class GatedBackend(PolicyBackend):
    """Chunk filled with state[0] (= the request's step); each run waits until the test opens the gate."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.started = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.seen: list[int] = []
        self.fail_on = fail_on

    @property
    def name(self) -> str:
        return "gated-fake"

    def _load_model(self, artifact: PolicyArtifact) -> None:
        pass

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        step = int(feeds["state"][0, 0])
        self.seen.append(step)
        self.started.release()
        assert self.gate.acquire(timeout=WAIT), "test never opened the gate"
        if step == self.fail_on:
            raise RuntimeError("engine exploded")
        return np.full((1, H, A), float(step), np.float32) + feeds["noise"] * 0


@pytest.fixture
def backend(artifact: PolicyArtifact) -> GatedBackend:
    b = GatedBackend()
    b.load(artifact)
    return b


def req(step: int) -> InferenceRequest:
    return InferenceRequest(step, PolicyObservation(np.full(A, float(step))))


def test_latest_request_wins_and_submit_never_blocks(backend: GatedBackend) -> None:
    with InferenceWorker(backend, policy_version=4, seed=0) as worker:
        assert not worker.submit(req(0))
        assert backend.started.acquire(timeout=WAIT)  # step 0 is running and blocked in the engine
        # the engine is blocked: these return at once (the test would hang otherwise)
        assert not worker.submit(req(1))
        assert worker.submit(req(2))  # replaces the unstarted step 1
        assert worker.submit(req(3))
        assert worker.busy and worker.poll() is None
        backend.gate.release()  # finish step 0
        assert backend.started.acquire(timeout=WAIT)  # step 3 starts next
        backend.gate.release()
        assert worker.wait_idle(WAIT)
        result = worker.poll()
        assert worker.poll() is None
    assert backend.seen == [0, 3]  # 1 and 2 were never computed
    assert worker.replaced == 2 and worker.completed == 2 and worker.results_dropped == 1
    assert result is not None and result.step == 3 and result.error is None
    assert result.policy_version == 4 and result.backend == "gated-fake"
    assert result.latency_s >= result.compute_s >= 0
    chunk = result.to_action_chunk()
    assert chunk.start_step == 3 and np.all(chunk.actions == 3.0)


def test_engine_errors_are_reported_and_the_thread_survives(artifact: PolicyArtifact) -> None:
    backend = GatedBackend(fail_on=5)
    backend.load(artifact)
    with InferenceWorker(backend) as worker:
        for step in (5, 6):
            worker.submit(req(step))
            assert backend.started.acquire(timeout=WAIT)
            backend.gate.release()
            assert worker.wait_idle(WAIT)
            result = worker.poll()
            assert result is not None and result.step == step
            if step == 5:
                assert result.chunk is None and "engine exploded" in (result.error or "")
                with pytest.raises(ValueError, match="failed"):
                    result.to_action_chunk()
            else:
                assert result.error is None and result.chunk is not None


def test_worker_feeds_the_chunk_executor_end_to_end(backend: GatedBackend) -> None:
    """Controller loop shape: step -> maybe submit -> poll -> submit chunk; nothing ever waits."""
    ex = ChunkExecutor(ExecutorConfig(request_lead_ticks=5, blend_steps=0, takeover_blend_steps=0))
    actions = []
    with InferenceWorker(backend, seed=1) as worker:
        for tick in range(40):
            result = worker.poll()
            if result is not None and result.chunk is not None:
                ex.submit(result.to_action_chunk())
            s = ex.step(tick)
            if s.request_inference:
                worker.submit(req(tick))
                assert backend.started.acquire(timeout=WAIT)
                backend.gate.release()  # "inference" finishes within this tick
                assert worker.wait_idle(WAIT)
            actions.append(None if s.action is None else float(s.action[0]))
    assert actions[0] is None  # nothing until the first chunk arrives
    assert all(a is not None for a in actions[1:])  # then never starved
    assert actions[1] == 0.0 and actions[-1] > 0.0  # later chunks came from later observations


def test_stop_drops_the_queue_and_running_reports_the_request_in_flight(backend: GatedBackend) -> None:
    """The controller closes a swapped-out engine only once its worker thread has really ended."""
    worker = InferenceWorker(backend).start()
    worker.submit(req(1))
    assert backend.started.acquire(timeout=WAIT)  # step 1 is inside the engine
    worker.submit(req(2))  # queued behind it
    worker.stop(timeout=0.0)  # returns at once
    assert worker.running  # still finishing step 1: the engine must stay open
    backend.gate.release()
    worker.stop(timeout=WAIT)
    assert not worker.running and backend.seen == [1]  # the queued request was dropped, not run
