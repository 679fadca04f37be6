"""Bounded fuzzing of the byte parsers: hypothesis-generated and mutation-based inputs."""

from __future__ import annotations

import random

from fuzz_targets import TARGETS, mutate, seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_episode_reader_on_random_bytes(data):
    TARGETS["episode"](data)


@FUZZ
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_manifest_parser_on_random_bytes(data):
    TARGETS["manifest"](data)


@FUZZ
@given(st.binary(max_size=1024))
def test_announcement_parser_on_random_bytes(data):
    TARGETS["announcement"](data)


def test_mutations_of_valid_seeds():
    """Mutation fuzzing from valid inputs reaches deeper than random bytes (fixed seed: reproducible)."""
    rng = random.Random(1234)
    for name, fn in TARGETS.items():
        corpus = seeds(name)
        for _ in range(300 if name != "episode" else 150):
            fn(mutate(rng.choice(corpus), rng))
