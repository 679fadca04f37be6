"""Connection settings and client factories for MQTT (paho v2) and S3 (minio), shared by robot and cloud.

Both sides need the same things (credentials, optional TLS, bounded timeouts, reconnects), and
getting them subtly different is how fleets break; so they live once, here. Factories return
configured clients; connecting is explicit so callers choose blocking (`connect_mqtt`) or
background reconnection (`start_mqtt`). paho-mqtt and minio are imported lazily: they are not
install requirements of lwd_protocol, only of the parts that talk to the network.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class TlsSettings:
    """TLS for either transport. ca_file=None uses the system trust store; cert/key enable mTLS."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True  # never disable outside a lab


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str
    password: str
    client_id: str = ""
    clean_session: bool = True  # the Coordinator uses False + a fixed client_id (persistent session)
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    tls: TlsSettings | None = None

    def __repr__(self) -> str:  # keep passwords out of logs
        return f"MqttEndpoint({self.username}@{self.host}:{self.port}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str  # host:port, as minio wants it
    access_key: str
    secret_key: str
    region: str = "us-east-1"  # fixed so write-only identities never need GetBucketLocation
    secure: bool = False
    tls: TlsSettings | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    retries: int = 1  # callers own retry policy (backoff, spooling); keep the SDK's short

    def __repr__(self) -> str:
        return f"S3Endpoint({self.access_key[:4]}…@{self.endpoint}, secure={self.secure})"


class MqttConnectError(ConnectionError):
    pass


def make_mqtt_client(ep: MqttEndpoint, manual_ack: bool = False) -> mqtt.Client:
    """A paho v2 client (MQTT 3.1.1) with credentials, TLS and reconnect backoff; not yet connected."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if not ep.clean_session and not ep.client_id:
        raise ValueError("a persistent MQTT session (clean_session=False) needs a fixed client_id")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=ep.client_id,
        clean_session=ep.clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    client.username_pw_set(ep.username, ep.password)
    if ep.tls is not None:
        client.tls_set(
            ca_certs=ep.tls.ca_file,
            certfile=ep.tls.cert_file,
            keyfile=ep.tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED if ep.tls.verify else ssl.CERT_NONE,
        )
        client.tls_insecure_set(not ep.tls.verify)
    client.reconnect_delay_set(min_delay=max(1, int(ep.reconnect_min_s)), max_delay=int(ep.reconnect_max_s))
    return client


def start_mqtt(client: mqtt.Client, ep: MqttEndpoint) -> None:
    """Connect in the background and keep reconnecting: never blocks, works while the broker is down."""
    client.connect_async(ep.host, ep.port, keepalive=ep.keepalive_s)
    client.loop_start()


def connect_mqtt(client: mqtt.Client, ep: MqttEndpoint, timeout_s: float = 10.0) -> mqtt.Client:
    """Connect and wait for CONNACK; raise MqttConnectError with the broker's reason on refusal."""
    done = threading.Event()
    result: dict[str, Any] = {}
    previous = client.on_connect

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()
        if previous is not None:
            previous(c, userdata, flags, reason_code, properties)

    client.on_connect = on_connect
    try:
        start_mqtt(client, ep)
        if not done.wait(timeout_s):
            client.loop_stop()
            raise MqttConnectError(f"no CONNACK from {ep!r} within {timeout_s:.0f} s")
        if result["rc"].is_failure:
            client.loop_stop()
            raise MqttConnectError(f"{ep!r} refused: {result['rc']}")
    finally:
        client.on_connect = previous
    return client


def stop_mqtt(client: mqtt.Client) -> None:
    """Disconnect cleanly (a persistent session stays on the broker) and stop the network thread."""
    try:
        client.disconnect()
    finally:
        client.loop_stop()


def make_s3_client(ep: S3Endpoint):
    """A minio client with bounded timeouts/retries and optional TLS (custom CA, client cert)."""
    import urllib3
    from minio import Minio

    ssl_kwargs: dict[str, Any] = {}
    if ep.secure and ep.tls is not None:
        ssl_kwargs = {
            "cert_reqs": "CERT_REQUIRED" if ep.tls.verify else "CERT_NONE",
            "ca_certs": ep.tls.ca_file,
            "cert_file": ep.tls.cert_file,
            "key_file": ep.tls.key_file,
        }
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=ep.connect_timeout_s, read=ep.read_timeout_s),
        retries=urllib3.Retry(total=ep.retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=4,
        **ssl_kwargs,
    )
    return Minio(
        ep.endpoint,
        access_key=ep.access_key,
        secret_key=ep.secret_key,
        secure=ep.secure,
        region=ep.region,
        http_client=http,
    )
