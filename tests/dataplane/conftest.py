"""Fixtures for the data-plane tests (helpers live in tests/helpers/dataplane.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.dataplane import make_coordinator, uid

from lwd_learner.coordinator import Coordinator


@pytest.fixture
def coordinator(mqtt_broker, s3_store, tmp_path) -> Iterator[Coordinator]:
    coord = make_coordinator(mqtt_broker, s3_store, tmp_path / "coord.db", uid("coord")).start()
    assert coord.subscribed.wait(10), "coordinator did not subscribe"
    try:
        yield coord
    finally:
        coord.stop()
