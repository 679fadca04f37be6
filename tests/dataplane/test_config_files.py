"""Credential-holding config files: owner-only, endpoints (TLS included) round-trip, errors name the field."""

from __future__ import annotations

import dataclasses
import json
import stat

import pytest

from lwd_learner.config_files import endpoint_from_dict, write_private_json
from lwd_learner.coordinator.runner import config_from_dict
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, TlsSettings


def test_endpoints_round_trip_with_tls_through_an_owner_only_file(tmp_path):
    s3 = S3Endpoint("127.0.0.1:9000", "AK", "secret", secure=True, tls=TlsSettings(ca_file="/etc/lwd/ca.pem"))
    mqtt = MqttEndpoint("127.0.0.1", 8883, "learner", "pw", tls=TlsSettings(ca_file="/etc/lwd/ca.pem"))
    path = write_private_json(
        tmp_path / "cfg" / "x.json", {"s3": dataclasses.asdict(s3), "mqtt": dataclasses.asdict(mqtt)}
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert endpoint_from_dict(S3Endpoint, data["s3"], "s3") == s3
    assert endpoint_from_dict(MqttEndpoint, data["mqtt"], "mqtt") == mqtt


def test_errors_name_the_offending_field():
    with pytest.raises(ValueError, match=r"unknown field mqtt\.tls\.ca"):
        endpoint_from_dict(
            MqttEndpoint, {"host": "h", "port": 1, "username": "u", "password": "p", "tls": {"ca": 1}}, "mqtt"
        )
    with pytest.raises(ValueError, match="s3 must be an object"):
        endpoint_from_dict(S3Endpoint, "127.0.0.1:9000", "s3")
    with pytest.raises(ValueError, match=r"coordinator config: unknown field mqtt\.hostname"):
        config_from_dict({"mqtt": {"hostname": "h"}, "s3": {}, "db_path": "/tmp/db"})
