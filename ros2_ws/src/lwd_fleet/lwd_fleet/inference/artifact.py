"""PolicyArtifact: a policy folder (manifest.json + policy.onnx [+ reference_io.npz]) that passed every check.

A backend loads only a ``PolicyArtifact``, and the only way to get one is ``open_artifact``, which
refuses the folder unless all of these hold (each failure is a ``ManifestError`` naming the field
or file):

  1. ``manifest.json`` parses and is internally consistent (``PolicyManifest.from_json``);
  2. every listed file exists with the recorded size and sha256 (``manifest.verify_files``);
  3. the declared inputs/outputs are exactly the policy tensor contract (``policy_io.check_io_contract``);
  4. the action spec matches this robot: joint names and chunk horizon (``manifest.check_compatible``);
  5. optionally, the folder's version is the one that was asked for (``expected_version``).

So an unverified or foreign policy can never reach an engine. Normalisation statistics travel in
the manifest and are applied by ``lwd_protocol.policy_io`` in the backend, never hard-coded here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwd_protocol.manifest import MAX_MANIFEST_BYTES, ManifestError, PolicyManifest
from lwd_protocol.policy_io import IMAGES_INPUT, check_io_contract
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES
from lwd_protocol.store import MANIFEST_NAME, policy_prefix

_VERIFIED = object()  # only open_artifact holds this: a PolicyArtifact cannot be built unchecked


@dataclass(frozen=True)
class PolicyObservation:
    """One raw observation as the controller sees it; ``policy_io.build_inputs`` normalises it.

    ``state`` is the vector named by the manifest's ``observation.state_source`` (joint positions
    in JOINT_NAMES order, or the sim's privileged state). ``task`` matters for multi-task policies;
    ``images`` (camera name -> (H, W, 3) uint8) only for policies that declare cameras.
    """

    state: np.ndarray
    task: str = ""
    images: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class PolicyArtifact:
    """A verified artifact folder. Build it with :func:`open_artifact`, never directly."""

    folder: Path
    manifest: PolicyManifest
    _token: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _VERIFIED:
            raise TypeError("PolicyArtifact is created only by open_artifact(), which verifies the folder")

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest.model_file

    @property
    def reference_io_path(self) -> Path | None:
        name = self.manifest.reference_io_file
        return self.folder / name if name else None

    @property
    def content_hash(self) -> str:
        """sha256 over the artifact's file digests: identifies the model bytes (and external data)."""
        lines = "".join(f"{name}:{entry.sha256}\n" for name, entry in sorted(self.manifest.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def state_source(self) -> str:
        return self.manifest.observation.state_source

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.manifest.observation.cameras)

    @property
    def needs_images(self) -> bool:
        return any(t.name == IMAGES_INPUT for t in self.manifest.inputs)


def artifact_dir(cache_dir: str | Path, version: int) -> Path:
    """Folder of one version inside the robot's policy cache: <cache_dir>/v000012 (store.policy_prefix)."""
    return Path(cache_dir) / policy_prefix(version).rstrip("/")


def open_artifact(
    folder: str | Path,
    joint_names: Sequence[str] = JOINT_NAMES,
    horizon: int | None = CHUNK_HORIZON,
    expected_version: int | None = None,
) -> PolicyArtifact:
    """Verify ``folder`` (see module docstring) and return the artifact; raise ManifestError otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in policy folder {folder}")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    manifest = PolicyManifest.from_json(path.read_bytes())
    if expected_version is not None and manifest.version != expected_version:
        raise ManifestError(f"{path} is version {manifest.version}, expected version {expected_version}")
    manifest.verify_files(folder)
    check_io_contract(manifest)
    manifest.check_compatible(tuple(joint_names), horizon)
    return PolicyArtifact(folder, manifest, _VERIFIED)
