"""PolicyLoader: verify + load + validate + warm up a policy artifact off the control thread.

Loading a new version means hashing its files, creating an ONNX Runtime session or building a
TensorRT engine (seconds to minutes) and running its reference I/O: none of that may happen on
the 30 Hz thread. ``request`` hands a folder to a background thread (newest request wins);
``poll`` returns a finished :class:`LoadedPolicy` or :class:`LoadFailure` without blocking. The
controller decides *when* to swap a loaded policy in (episode boundaries); this only prepares it.

Steps, each of which refuses the artifact with a message naming what was wrong:
``open_artifact`` (manifest, sha256 of every file, I/O contract, joint names, horizon, version)
-> ``load_backend`` (engine selection with fallback in 'auto') -> ``validate_reference`` (when the
artifact ships reference I/O) -> warm-up runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwd_fleet.inference.artifact import PolicyArtifact, open_artifact
from lwd_fleet.inference.backend import PolicyBackend
from lwd_fleet.inference.select import Environment, load_backend
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES


@dataclass(frozen=True)
class LoaderConfig:
    preference: str = "auto"  # auto | tensorrt | onnxruntime-cuda | onnxruntime-cpu
    joint_names: tuple[str, ...] = JOINT_NAMES
    horizon: int = CHUNK_HORIZON
    warmup_iterations: int = 3
    backend_kwargs: dict[str, Any] = field(default_factory=dict)  # trt_cache_dir, fp16, ort_threads


@dataclass(frozen=True)
class LoadedPolicy:
    artifact: PolicyArtifact
    backend: PolicyBackend
    reason: str  # why this engine was picked (select_backend), for logs and PolicyStatus.message
    reference_error: float | None  # max |engine - reference| on the artifact's reference I/O
    load_s: float

    @property
    def version(self) -> int:
        return self.artifact.version


@dataclass(frozen=True)
class LoadFailure:
    version: int | None  # the version asked for (None: an initial folder of unknown version)
    folder: Path
    error: str


class PolicyLoader:
    def __init__(self, config: LoaderConfig | None = None, env: Environment | None = None) -> None:
        self.cfg = config or LoaderConfig()
        self._env = env
        self._cond = threading.Condition()
        self._request: tuple[Path, int | None] | None = None
        self._result: LoadedPolicy | LoadFailure | None = None
        self._busy: tuple[Path, int | None] | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def load_now(self, folder: str | Path, expected_version: int | None = None) -> LoadedPolicy:
        """Synchronous load (the background thread runs this). Raises on any failure."""
        t0 = time.perf_counter()
        cfg = self.cfg
        artifact = open_artifact(folder, cfg.joint_names, cfg.horizon, expected_version)
        selection = load_backend(cfg.preference, artifact, env=self._env, **cfg.backend_kwargs)
        try:
            ref_err = selection.backend.validate_reference()
            if cfg.warmup_iterations > 0:
                selection.backend.warmup(cfg.warmup_iterations)
        except BaseException:
            selection.backend.close()
            raise
        return LoadedPolicy(artifact, selection.backend, selection.reason, ref_err, time.perf_counter() - t0)

    # --------------------------------------------------------------- background
    def request(self, folder: str | Path, expected_version: int | None = None) -> None:
        """Queue a load; replaces a queued (not yet started) one. Never blocks."""
        with self._cond:
            self._request = (Path(folder), expected_version)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lwd-policy-loader", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def poll(self) -> LoadedPolicy | LoadFailure | None:
        with self._cond:
            result, self._result = self._result, None
        return result

    @property
    def in_progress(self) -> tuple[Path, int | None] | None:
        """(folder, version) being loaded or queued, if any."""
        with self._cond:
            return self._busy or self._request

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy is not None or self._request is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        leftover = self.poll()
        if isinstance(leftover, LoadedPolicy):
            leftover.backend.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._request = self._request, None
                self._busy = job
            folder, version = job
            result: LoadedPolicy | LoadFailure
            try:
                result = self.load_now(folder, version)
            except Exception as exc:  # reported to the controller, which keeps its current policy
                result = LoadFailure(version, folder, f"{type(exc).__name__}: {exc}")
            with self._cond:
                old, self._result = self._result, result
                self._busy = None
                self._cond.notify_all()
            if isinstance(old, LoadedPolicy):  # superseded before anyone polled it
                old.backend.close()
