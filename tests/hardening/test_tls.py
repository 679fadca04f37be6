"""TLS by configuration: MQTT over TLS and S3 over HTTPS on loopback, checked against a test CA.

Clients that skip TLS or trust a different CA are refused; clients configured through the same
`lwd_protocol.transport` settings the robots use connect and work.
"""

from __future__ import annotations

import dataclasses
import io
import json
import ssl

import pytest
from helpers.policy_artifacts import build_tiny_artifact

from lwd_learner.admin import main as admin_main
from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3, ServerTls, TestCA
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, episode_key
from lwd_protocol.transport import (
    MqttConnectError,
    S3Endpoint,
    TlsSettings,
    connect_mqtt,
    make_mqtt_client,
    make_s3_client,
    stop_mqtt,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    good = TestCA(tmp_path_factory.mktemp("ca"))
    rogue = TestCA(tmp_path_factory.mktemp("rogue-ca"))
    return good, rogue, ServerTls.from_ca(good)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki):
    broker = MosquittoBroker(
        tmp_path_factory.mktemp("mqtt-tls"),
        [MqttIdentity.generate("robot_01", "robot"), MqttIdentity.generate("admin", "admin")],
        tls=pki[2],
    ).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def tls_store(tmp_path_factory, pki):
    store = SeaweedS3(tmp_path_factory.mktemp("s3-tls"), [S3Identity.admin(), S3Identity.robot("robot_01")], tls=pki[2])
    store.start()
    yield store
    store.stop()


def test_mqtt_over_tls_works_with_the_fleet_ca(tls_broker):
    ep = tls_broker.endpoint("robot_01", client_id="tls-ok")
    assert ep.tls is not None
    client = connect_mqtt(make_mqtt_client(ep), ep)
    try:
        info = client.publish(MqttTopics.robot_status("robot_01"), b"{}", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        stop_mqtt(client)


def test_mqtt_plaintext_and_rogue_ca_are_refused(tls_broker, pki):
    plain = dataclasses.replace(tls_broker.endpoint("robot_01", client_id="tls-plain"), tls=None)
    with pytest.raises(MqttConnectError):
        connect_mqtt(make_mqtt_client(plain), plain, timeout_s=3)
    rogue = dataclasses.replace(plain, tls=TlsSettings(ca_file=pki[1].ca_file), client_id="tls-rogue")
    with pytest.raises((MqttConnectError, ssl.SSLError)):
        connect_mqtt(make_mqtt_client(rogue), rogue, timeout_s=3)


def test_s3_over_https_works_with_the_fleet_ca(tls_store):
    ep = tls_store.s3_endpoint("robot_01")
    assert ep.secure and ep.endpoint.startswith("127.0.0.1:")
    key = episode_key("robot_01", "tls-episode")
    make_s3_client(ep).put_object(EPISODES_BUCKET, key, io.BytesIO(b"abc"), 3)
    assert tls_store.client("admin").get_object(EPISODES_BUCKET, key).read() == b"abc"


def test_s3_rogue_ca_and_plain_http_are_refused(tls_store, pki):
    ep = tls_store.s3_endpoint("robot_01")
    rogue = S3Endpoint(ep.endpoint, ep.access_key, ep.secret_key, secure=True, tls=TlsSettings(ca_file=pki[1].ca_file))
    plain = S3Endpoint(ep.endpoint, ep.access_key, ep.secret_key, secure=False)
    for bad in (rogue, plain):
        with pytest.raises(Exception) as info:
            make_s3_client(bad).put_object(EPISODES_BUCKET, episode_key("robot_01", "nope"), io.BytesIO(b"x"), 1)
        assert "AccessDenied" not in str(info.value)  # refused at the transport, before any auth decision


def test_admin_cli_pushes_and_lists_over_tls_and_refuses_plaintext(tls_broker, tls_store, pki, tmp_path, capsys):
    """A learner admin's `lwd admin` reaches a TLS broker and an HTTPS store with the fleet CA only."""
    mq, s3 = tls_broker.identity("admin"), tls_store.identity("admin")
    (tmp_path / "mqtt.pw").write_text(mq.password)
    (tmp_path / "s3.key").write_text(s3.secret_key)
    conn = [
        "--mqtt", f"{tls_broker.host}:{tls_broker.port}", "--mqtt-user", "admin",
        "--mqtt-password-file", str(tmp_path / "mqtt.pw"),
        "--s3", tls_store.endpoint, "--s3-access-key", s3.access_key,
        "--s3-secret-key-file", str(tmp_path / "s3.key"),
    ]  # fmt: skip
    tls = ["--mqtt-ca", pki[0].ca_file, "--s3-ca", pki[0].ca_file]
    assert admin_main(["keygen", "--out", str(tmp_path / "keys" / "admin")]) == 0
    build_tiny_artifact(tmp_path / "a1", 1)
    capsys.readouterr()

    assert admin_main(["push", str(tmp_path / "a1"), *conn, *tls, "--key", str(tmp_path / "keys" / "admin.key")]) == 0
    capsys.readouterr()
    assert admin_main(["list", *conn, *tls, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [row["version"] for row in listing] == [1] and listing[0]["ordered_for"] == ["fleet"]

    assert admin_main(["list", *conn, "--json"]) == 1  # plain HTTP to the HTTPS store
    assert admin_main(["list", *conn, "--s3-ca", pki[1].ca_file, "--json"]) == 1  # a CA the store is not from
    assert "Traceback" not in capsys.readouterr().err
