"""The fleet status page, loaded in headless Chromium, shows what the Coordinator committed.

Real broker, store, uplinks and Coordinator produce snapshots and a quarantined announcement;
the page (served from the snapshot store opened read-only) is rendered by a real browser and
its numbers are compared with the Coordinator's own state. Writes are refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from helpers.dataplane import make_uplink, mqtt_ep, uid, wait_until, write_episode

from lwd_learner.coordinator.snapshot_store import SqliteSnapshotReader
from lwd_learner.status_page import StatusPage, fleet_status
from lwd_protocol.names import MqttTopics
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dump_dom(url: str, tmp_path) -> str:
    # loopback only: no background fetches (component updates, sync, safe browsing, metrics)
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-domain-reliability", "--no-pings", "--metrics-recording-only",
            "--safebrowsing-disable-auto-update", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom", url]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _by_id(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"element #{element_id} not in the page"
    return match.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make setup installs it)")
def test_status_page_matches_the_coordinator_in_a_real_browser(mqtt_broker, s3_store, coordinator, tmp_path):
    for robot_id, count in (("robot_01", 3), ("robot_02", 2)):
        spool = tmp_path / robot_id
        for _ in range(count):
            write_episode(spool, robot_id)
        uplink = make_uplink(mqtt_broker, s3_store, robot_id, spool)
        try:
            assert uplink.drain(timeout_s=20)
        finally:
            uplink.close()
    ep = mqtt_ep(mqtt_broker, "robot_01", uid("garbage"))
    robot = connect_mqtt(make_mqtt_client(ep), ep)
    robot.publish(MqttTopics.episodes("robot_01"), b"\x00not an announcement", qos=1).wait_for_publish(5)
    stop_mqtt(robot)

    def committed() -> int:
        version = coordinator.current_version()
        return len(coordinator.get_snapshot(version)) if version else 0

    assert wait_until(lambda: committed() == 5, 30)
    assert wait_until(lambda: len(coordinator.quarantined()) == 1, 10)

    reader = SqliteSnapshotReader(coordinator.config.db_path)
    page = StatusPage(lambda: fleet_status(reader)).start()
    try:
        dom = _dump_dom(page.url, tmp_path)
        assert int(_by_id(dom, "snapshot")) == coordinator.current_version()
        assert int(_by_id(dom, "episodes")) == 5
        assert int(_by_id(dom, "quarantined")) == len(coordinator.quarantined()) == 1
        stats = coordinator.robot_stats()
        for robot_id in ("robot_01", "robot_02"):
            row = re.search(rf'data-robot="{robot_id}".*?class="episodes">(\d+)<', dom, re.S)
            assert row and int(row.group(1)) == stats[robot_id].committed
        # success by task and policy version: the test episodes were driven by policy version 0 (write_episode)
        status = fleet_status(reader)
        assert {v for versions in status["success_by_task_version"].values() for v in versions} == {"v0"}
        assert sum(c["episodes"] for vs in status["success_by_task_version"].values() for c in vs.values()) == 5
        # read-only: every write method is refused
        request = urllib.request.Request(page.url, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 405
    finally:
        page.stop()
        reader.close()
