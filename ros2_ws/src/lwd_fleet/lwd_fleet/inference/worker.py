"""InferenceWorker: runs the policy on its own thread so the 30 Hz control loop never waits.

One-slot request queue: a new request replaces an older one that has not started yet (the
older observation is already superseded -- computing it would only deliver a staler chunk).
One-slot result: ``poll()`` returns the newest finished result and drops older unpolled ones.
Every result is tagged with the control step its observation was taken at, so the chunk
executor aligns it (``ActionChunk.start_step``), plus the measured latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lwd_fleet.control.chunking import ActionChunk
from lwd_fleet.inference.artifact import PolicyObservation
from lwd_fleet.inference.backend import PolicyBackend


@dataclass(frozen=True)
class InferenceRequest:
    step: int  # control tick the observation was taken at
    observation: PolicyObservation
    noise: np.ndarray | None = None  # None: the worker draws N(0, I) of the policy's (H, A)


@dataclass(frozen=True)
class InferenceResult:
    step: int
    chunk: np.ndarray | None  # (H, A) float32, None on error
    latency_s: float  # submit -> result ready: what the control loop experiences
    compute_s: float  # backend.infer alone
    backend: str
    policy_version: int
    error: str | None = None

    def to_action_chunk(self) -> ActionChunk:
        if self.chunk is None:
            raise ValueError(f"inference for step {self.step} failed: {self.error}")
        return ActionChunk(self.step, self.chunk, self.policy_version, self.latency_s)


class InferenceWorker:
    def __init__(
        self,
        backend: PolicyBackend,
        *,
        policy_version: int = 0,
        seed: int | None = None,
        on_result: Callable[[InferenceResult], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """on_result is called on the worker thread (e.g. to trigger a ROS guard condition)."""
        self._backend = backend
        self._version = policy_version
        self._rng = np.random.default_rng(seed)
        self._on_result = on_result
        self._clock = clock
        self._cond = threading.Condition()
        self._request: tuple[InferenceRequest, float] | None = None
        self._result: InferenceResult | None = None
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.replaced = 0  # requests overwritten before they started
        self.completed = 0
        self.results_dropped = 0  # results overwritten before they were polled

    # ----------------------------------------------------------- lifecycle
    def start(self) -> InferenceWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lwd-inference", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to end after its current request (a queued one is dropped); wait ``timeout``."""
        with self._cond:
            self._stop = True
            self._request = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    @property
    def running(self) -> bool:
        """The thread is still alive (e.g. finishing a request after stop()): its backend is in use."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> InferenceWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ API
    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._request is not None

    def swap_backend(self, backend: PolicyBackend, policy_version: int) -> None:
        """Use a new (loaded) policy from the next request on; the request in flight finishes on the old."""
        with self._cond:
            self._backend, self._version = backend, policy_version

    def submit(self, request: InferenceRequest) -> bool:
        """Queue a request without blocking. Returns True if it replaced an unstarted older one."""
        with self._cond:
            replaced = self._request is not None
            self._request = (request, self._clock())
            self.submitted += 1
            self.replaced += int(replaced)
            self._cond.notify_all()
        return replaced

    def poll(self) -> InferenceResult | None:
        """Newest finished result, or None. Never blocks on inference."""
        with self._cond:
            result, self._result = self._result, None
        return result

    def wait_idle(self, timeout: float) -> bool:
        """For tests and shutdown: block until no request is queued or running."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._request is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # --------------------------------------------------------------- thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                assert self._request is not None
                (request, submitted_at), self._request = self._request, None
                backend, version = self._backend, self._version
                self._busy = True
            result = self._infer(backend, version, request, submitted_at)
            with self._cond:
                self.results_dropped += int(self._result is not None)
                self._result = result
                self.completed += 1
                self._busy = False
                self._cond.notify_all()
            if self._on_result is not None:
                self._on_result(result)

    def _infer(self, backend: PolicyBackend, version: int, req: InferenceRequest, submitted: float) -> InferenceResult:
        t0 = self._clock()
        chunk, error = None, None
        try:
            noise = req.noise
            if noise is None:
                action = backend.manifest.action
                noise = self._rng.standard_normal((action.horizon, action.dim), dtype=np.float32)
            chunk = backend.infer(req.observation, noise)
        except Exception as exc:  # reported to the controller, which holds; the thread lives on
            error = f"{type(exc).__name__}: {exc}"
        t1 = self._clock()
        return InferenceResult(req.step, chunk, t1 - submitted, t1 - t0, backend.name, version, error)
