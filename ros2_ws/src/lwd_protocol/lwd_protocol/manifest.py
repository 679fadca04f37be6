"""The policy artifact contract: ONNX model + manifest.json (+ reference I/O), one folder per version.

The manifest tells a robot everything it must check before a policy may drive its arms:
which files belong to the artifact and their sha256, the observation/action spec it was
trained for, the normalisation to apply to inputs (never hard-coded on the robot), reference
inputs/outputs to validate a freshly built engine against, and lineage (parent version,
training snapshot). `signing_payload()` is the canonical byte string a signature covers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lwd_protocol.robot_spec import CAMERA_NAMES, CHUNK_HORIZON, CONTROL_RATE_HZ, JOINT_NAMES
from lwd_protocol.store import MANIFEST_NAME
from lwd_protocol.version import MANIFEST_FORMAT_VERSION, ProtocolVersionError, check_version

MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class ManifestError(ValueError):
    """A manifest or artifact that fails validation; the message names the field or file."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass
class TensorSpec:
    """One named model input/output: shape with -1 for the batch dimension."""

    name: str
    shape: list[int]
    dtype: str = "float32"


@dataclass
class ActionSpec:
    """The action chunk: joint targets for ``horizon`` ticks at ``control_rate_hz``.

    ``relative_dims`` are predicted as offsets from the measured joint position at the chunk's
    first tick (openpi's delta actions: the network outputs small residuals instead of
    re-deriving where the arm already is); the anchor of ``relative_dims[i]`` is the raw
    ``state`` input's value at ``relative_state_index[i]``. The other dims (grippers) are absolute.
    """

    joint_names: list[str] = field(default_factory=lambda: list(JOINT_NAMES))
    horizon: int = CHUNK_HORIZON
    control_rate_hz: float = CONTROL_RATE_HZ
    relative_dims: list[int] = field(default_factory=list)
    relative_state_index: list[int] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return len(self.joint_names)


@dataclass
class ObservationSpec:
    """What the policy consumes. `state_source` says which low-dim vector feeds `state`:
    "joint_positions" on hardware, or "sim_state" (privileged, sim only) for CPU-scale policies."""

    state_source: str = "joint_positions"
    state_dim: int = len(JOINT_NAMES)
    cameras: list[str] = field(default_factory=list)
    image_size: list[int] = field(default_factory=list)  # [H, W] when cameras are used
    tasks: list[str] = field(default_factory=list)  # task one-hot order, when the policy is multi-task


@dataclass
class Normalization:
    """x_normalised = (x - mean) / std, per input; actions are de-normalised with action_mean/std.

    The action statistics have either ``A`` values (one per joint, shared by every chunk step) or
    ``H * A`` values (row-major ``(H, A)``: one per chunk step and joint, which relative actions
    need because an offset grows with the step).
    """

    state_mean: list[float]
    state_std: list[float]
    action_mean: list[float]
    action_std: list[float]


@dataclass
class PolicyManifest:
    version: int
    parent_version: int
    created_at: str
    training_snapshot: int
    model_file: str
    files: dict[str, FileEntry]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    observation: ObservationSpec
    action: ActionSpec
    normalization: Normalization
    flow_steps: int = 10
    flow_time_convention: str = "w=0 noise, w=1 data"
    reference_io_file: str = ""
    reference_atol: float = 1e-4
    algorithm: str = "lwd"
    notes: str = ""
    format_version: int = MANIFEST_FORMAT_VERSION
    signature: dict[str, str] | None = None  # {"alg": "ed25519", "key_id": ..., "value": base64}

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self, include_signature: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not include_signature:
            data.pop("signature")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def signing_payload(self) -> bytes:
        """Canonical JSON of everything except the signature (sorted keys, no whitespace)."""
        return json.dumps(self.to_dict(include_signature=False), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> PolicyManifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is {len(text)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyManifest:
        try:
            check_version("manifest", int(data.get("format_version", -1)), MANIFEST_FORMAT_VERSION)
            manifest = cls(
                version=_int(data, "version"),
                parent_version=_int(data, "parent_version"),
                created_at=str(data["created_at"]),
                training_snapshot=_int(data, "training_snapshot"),
                model_file=str(data["model_file"]),
                files={
                    str(k): FileEntry(sha256=str(v["sha256"]), size=int(v["size"])) for k, v in data["files"].items()
                },
                inputs=[TensorSpec(**t) for t in data["inputs"]],
                outputs=[TensorSpec(**t) for t in data["outputs"]],
                observation=ObservationSpec(**data["observation"]),
                action=ActionSpec(**data["action"]),
                normalization=Normalization(**data["normalization"]),
                flow_steps=_int(data, "flow_steps"),
                flow_time_convention=str(data.get("flow_time_convention", "")),
                reference_io_file=str(data.get("reference_io_file", "")),
                reference_atol=float(data.get("reference_atol", 1e-4)),
                algorithm=str(data.get("algorithm", "")),
                notes=str(data.get("notes", "")),
                format_version=int(data["format_version"]),
                signature=data.get("signature"),
            )
        except ProtocolVersionError as exc:
            raise ManifestError(str(exc)) from exc
        except KeyError as exc:
            raise ManifestError(f"manifest lacks required field {exc.args[0]!r}") from exc
        except (TypeError, AttributeError) as exc:
            raise ManifestError(f"manifest has a field of the wrong type: {exc}") from exc
        manifest.validate()
        return manifest

    # --- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Internal consistency; raises ManifestError naming the first bad field."""
        if self.version < 1:
            raise ManifestError(f"version must be >= 1, got {self.version}")
        if not 0 <= self.parent_version < self.version:
            raise ManifestError(f"parent_version {self.parent_version} must be in [0, version={self.version})")
        if self.model_file not in self.files:
            raise ManifestError(f"model_file {self.model_file!r} is not listed in files")
        if self.reference_io_file and self.reference_io_file not in self.files:
            raise ManifestError(f"reference_io_file {self.reference_io_file!r} is not listed in files")
        for name, entry in self.files.items():
            if "/" in name or name in ("", ".", "..") or name == MANIFEST_NAME:
                raise ManifestError(f"invalid artifact file name {name!r}")
            if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
                raise ManifestError(f"files[{name!r}].sha256 is not a lowercase hex sha256")
        if self.action.horizon < 1 or self.action.dim < 1:
            raise ManifestError(
                f"action spec must be positive, got horizon={self.action.horizon} dim={self.action.dim}"
            )
        self._validate_relative_actions()
        norm = self.normalization
        per_step = self.action.horizon * self.action.dim
        for key, values, sizes in (
            ("state_mean", norm.state_mean, (self.observation.state_dim,)),
            ("state_std", norm.state_std, (self.observation.state_dim,)),
            ("action_mean", norm.action_mean, (self.action.dim, per_step)),
            ("action_std", norm.action_std, (self.action.dim, per_step)),
        ):
            if len(values) not in sizes:
                want = " or ".join(str(n) for n in sizes)
                raise ManifestError(f"normalization.{key} has {len(values)} values, expected {want}")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise ManifestError(f"normalization.{key} contains a non-finite value")
            if key.endswith("std") and not all(v > 0 for v in values):
                raise ManifestError(f"normalization.{key} must be strictly positive")
        for cam in self.observation.cameras:
            if cam not in CAMERA_NAMES:
                raise ManifestError(f"observation.cameras names unknown camera {cam!r}")
        if self.flow_steps < 1:
            raise ManifestError(f"flow_steps must be >= 1, got {self.flow_steps}")

    def _validate_relative_actions(self) -> None:
        dims, index = self.action.relative_dims, self.action.relative_state_index
        if len(dims) != len(index):
            raise ManifestError(
                f"action.relative_dims has {len(dims)} entries but action.relative_state_index has {len(index)}"
            )
        if len(set(dims)) != len(dims) or not all(isinstance(d, int) and 0 <= d < self.action.dim for d in dims):
            raise ManifestError(f"action.relative_dims {dims} must be distinct action dims in [0, {self.action.dim})")
        state_dim = self.observation.state_dim
        if not all(isinstance(i, int) and 0 <= i < state_dim for i in index):
            raise ManifestError(f"action.relative_state_index {index} must be state indices in [0, {state_dim})")

    def verify_files(self, folder: Path) -> None:
        """Check every listed file exists in folder with the recorded size and sha256."""
        for name, entry in self.files.items():
            path = Path(folder) / name
            if not path.is_file():
                raise ManifestError(f"artifact file {name!r} is missing")
            size = path.stat().st_size
            if size != entry.size:
                raise ManifestError(f"artifact file {name!r} is {size} bytes, manifest says {entry.size}")
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise ManifestError(f"artifact file {name!r} sha256 mismatch: {digest} != {entry.sha256}")

    def check_compatible(self, joint_names: list[str] | tuple[str, ...], horizon: int | None = None) -> None:
        """Refuse an artifact whose action spec does not match this robot."""
        if list(joint_names) != list(self.action.joint_names):
            raise ManifestError(f"action joints {self.action.joint_names} do not match the robot's {list(joint_names)}")
        if horizon is not None and horizon != self.action.horizon:
            raise ManifestError(f"action horizon {self.action.horizon} does not match the controller's {horizon}")


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"manifest field {key!r} must be an integer, got {value!r}")
    return value


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), size=Path(path).stat().st_size)
