"""Fuzz targets for the parsers that take bytes from the network: episode reader, manifest, announcement.

Each target accepts arbitrary bytes and must either parse them or raise the parser's own named
error -- any other exception (or a hang) is a bug. The targets run three ways:
  * under hypothesis in the test suite (tests/hardening/test_fuzz.py, bounded examples);
  * standalone with a time budget: `python tests/hardening/fuzz_targets.py episode --seconds 60`
    (random mutations of valid seeds, reproducible with --seed);
  * under atheris when installed: `python tests/hardening/fuzz_targets.py episode --atheris`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lwd_protocol.announce import AnnouncementError, EpisodeAnnouncement
from lwd_protocol.episode_io import EpisodeFormatError, read_episode
from lwd_protocol.manifest import ManifestError, PolicyManifest


def fuzz_episode(data: bytes) -> None:
    try:
        episode = read_episode(data, load_images=True, allow_partial=True)
    except EpisodeFormatError:
        return
    assert episode.num_steps == len(episode.action)


def fuzz_manifest(data: bytes) -> None:
    try:
        manifest = PolicyManifest.from_json(data)
    except ManifestError:
        return
    assert PolicyManifest.from_json(manifest.to_json()) == manifest


def fuzz_announcement(data: bytes) -> None:
    try:
        ann = EpisodeAnnouncement.from_json(data)
    except AnnouncementError:
        return
    assert EpisodeAnnouncement.from_json(ann.to_json()) == ann


TARGETS: dict[str, Callable[[bytes], None]] = {
    "episode": fuzz_episode,
    "manifest": fuzz_manifest,
    "announcement": fuzz_announcement,
}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to mutate from, built with the protocol's own writers."""
    sys.path.insert(0, str(Path(__file__).parent))
    from malformed_corpus import valid_episode
    from sample_manifest import sample_manifest_json

    if target == "episode":
        return [valid_episode(Path(tempfile.mkdtemp()))]
    if target == "manifest":
        return [sample_manifest_json().encode()]
    return [
        b'{"committed_at_ns":1,"episode_id":"e1","key":"robot_01/e1.mcap","num_steps":3,"outcome":"success",'
        b'"robot_id":"robot_01","sha256":"' + b"0" * 64 + b'","size":10,"task":"restocking","v":1}'
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not buf or op < 0.2:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        elif op < 0.6:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op < 0.8:
            del buf[rng.randrange(len(buf)) :]
        else:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 64)]
    return bytes(buf)


def run_random(target: str, seconds: float, seed: int) -> int:
    fn, rng, corpus = TARGETS[target], random.Random(seed), seeds(target)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        fn(mutate(rng.choice(corpus), rng))
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atheris", action="store_true", help="run under atheris (pip install atheris)")
    args, rest = parser.parse_known_args(argv)
    if args.atheris:
        import atheris

        atheris.Setup([sys.argv[0], *rest], TARGETS[args.target])
        atheris.Fuzz()
        return
    n = run_random(args.target, args.seconds, args.seed)
    print(f"{args.target}: {n} mutated inputs, no unexpected exception")


if __name__ == "__main__":
    main()
