"""The SeaweedFS fixture is a real S3 server: objects round-trip, bad credentials are refused."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from minio import Minio
from minio.error import S3Error

from lwd_learner.localstack import S3Identity, SeaweedS3
from lwd_protocol.store import BUCKETS, EPISODES_BUCKET, episode_key


def test_buckets_exist(s3_store):
    names = {b.name for b in s3_store.client("admin").list_buckets()}
    assert set(BUCKETS) <= names


def test_put_get_list_roundtrip(s3_store):
    client = s3_store.client("admin")
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several parts' worth, not aligned
    key = episode_key("robot_01", "robot_01-20260101T000000-deadbeef")
    digest = hashlib.sha256(payload).hexdigest()
    client.put_object(EPISODES_BUCKET, key, io.BytesIO(payload), len(payload), metadata={"sha256": digest})
    response = client.get_object(EPISODES_BUCKET, key)
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    stat = client.stat_object(EPISODES_BUCKET, key)
    assert stat.size == len(payload)
    assert stat.metadata.get("x-amz-meta-sha256") == digest
    listed = [o.object_name for o in client.list_objects(EPISODES_BUCKET, prefix="robot_01/", recursive=True)]
    assert key in listed


@pytest.mark.parametrize("access_key,secret_key", [("AKNOTAKEY000000000", "not-a-secret"), ("", "")])
def test_bad_or_missing_keys_are_refused(s3_store, access_key, secret_key):
    client = Minio(s3_store.endpoint, access_key=access_key or None, secret_key=secret_key or None, secure=False)
    with pytest.raises(S3Error) as err:
        client.put_object(EPISODES_BUCKET, "robot_01/forged.mcap", io.BytesIO(b"x"), 1)
    assert err.value.code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}


def test_wrong_secret_for_valid_key_is_refused(s3_store):
    ident = s3_store.identity("admin")
    client = Minio(s3_store.endpoint, access_key=ident.access_key, secret_key=ident.secret_key + "x", secure=False)
    with pytest.raises(S3Error) as err:
        list(client.list_objects(EPISODES_BUCKET))
    assert err.value.code in {"SignatureDoesNotMatch", "AccessDenied"}


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_stopped_server_leaves_no_socket_in_tmp(tmp_path, how):
    """SeaweedFS opens unix sockets under /tmp whatever its data dir; hundreds piled up across runs."""
    store = SeaweedS3(tmp_path / "weed", [S3Identity.admin()]).start()
    try:
        opened = [p for p in store.unix_sockets() if p.exists()]
        assert any(p.name.startswith("seaweedfs-s3-") for p in opened), "the naming no longer matches SeaweedFS"
    finally:
        getattr(store, how)()
    assert opened and not [p for p in store.unix_sockets() if p.exists()]
