"""`lwd admin`: push, roll back, list and watch the fleet's policies.

    lwd admin keygen --out keys/admin            write admin.key (0600) + admin.pub, print the key id
    lwd admin push ARTIFACT_DIR [--robot ID]...  sign + upload + announce (--robot pins those robots)
    lwd admin push --checkpoint DIR [--step N]   export a learner checkpoint to an artifact, then push it
    lwd admin rollback VERSION [--robot ID]...   signed order back to a version already published
    lwd admin unpin --robot ID                   clear a robot's pin: it follows the fleet order again
    lwd admin list                               versions in the store: snapshot, created, parent, eval
    lwd admin status [--coordinator-db PATH]     per robot: running/pending version, episodes, success

Connection settings come from flags or the environment (flags win): LWD_MQTT (host:port),
LWD_MQTT_USER, LWD_MQTT_PASSWORD or LWD_MQTT_PASSWORD_FILE, LWD_MQTT_CA, LWD_S3 (host:port),
LWD_S3_ACCESS_KEY, LWD_S3_SECRET_KEY or LWD_S3_SECRET_KEY_FILE, LWD_S3_CA, LWD_ADMIN_KEY (the
Ed25519 private key that signs manifests and orders), LWD_COORDINATOR_DB. Every command exits
non-zero with a one-line reason on failure; `--json` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lwd_learner.publish import PolicyPublisher, PublisherConfig, PublishError, VersionInfo
from lwd_protocol.announce import FLEET_TARGET, PolicyAnnouncement, RobotPolicyStatus
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, TlsSettings

DEFAULT_MQTT = "127.0.0.1:1883"
DEFAULT_S3 = "127.0.0.1:8333"


class AdminError(RuntimeError):
    """A usage or configuration problem; printed as one line."""


# --- configuration -------------------------------------------------------------------------------
def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _secret(value: str, file: str, what: str) -> str:
    if value:
        return value
    if file:
        try:
            return Path(file).expanduser().read_text().strip()
        except OSError as exc:
            raise AdminError(f"cannot read {what} file {file}: {exc}") from exc
    raise AdminError(f"no {what}: pass --{what.replace(' ', '-')}-file or set the environment variable")


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise AdminError(f"{what} must be HOST:PORT, got {text!r}")
    return host, int(port)


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection (flags override LWD_* environment variables)")
    g.add_argument("--mqtt", default=None, help=f"broker HOST:PORT (LWD_MQTT, default {DEFAULT_MQTT})")
    g.add_argument("--mqtt-user", default=None, help="MQTT user (LWD_MQTT_USER, default admin)")
    g.add_argument("--mqtt-password-file", default=None, help="file with the MQTT password (LWD_MQTT_PASSWORD_FILE)")
    g.add_argument("--mqtt-ca", default=None, help="CA file: TLS to the broker (LWD_MQTT_CA)")
    g.add_argument("--s3", default=None, help=f"object store HOST:PORT (LWD_S3, default {DEFAULT_S3})")
    g.add_argument("--s3-access-key", default=None, help="S3 access key (LWD_S3_ACCESS_KEY)")
    g.add_argument("--s3-secret-key-file", default=None, help="file with the S3 secret key (LWD_S3_SECRET_KEY_FILE)")
    g.add_argument("--s3-ca", default=None, help="CA file: HTTPS to the store (LWD_S3_CA)")
    g.add_argument("--key", default=None, help="Ed25519 private key that signs (LWD_ADMIN_KEY)")
    g.add_argument("--as", dest="issued_by", default=None, help="identity recorded in orders (default: MQTT user)")
    g.add_argument("--json", action="store_true", help="print JSON")
    return common


def _endpoints(args: argparse.Namespace, need_mqtt: bool) -> tuple[S3Endpoint, MqttEndpoint | None, str]:
    s3_host, s3_port = _host_port(args.s3 or _env("LWD_S3", DEFAULT_S3), "--s3")
    s3_ca = args.s3_ca or _env("LWD_S3_CA")
    access = args.s3_access_key or _env("LWD_S3_ACCESS_KEY")
    if not access:
        raise AdminError("no S3 access key: pass --s3-access-key or set LWD_S3_ACCESS_KEY")
    s3 = S3Endpoint(
        f"{s3_host}:{s3_port}",
        access,
        _secret(_env("LWD_S3_SECRET_KEY"), args.s3_secret_key_file or _env("LWD_S3_SECRET_KEY_FILE"), "s3 secret key"),
        secure=bool(s3_ca),
        tls=TlsSettings(ca_file=s3_ca) if s3_ca else None,
    )
    user = args.mqtt_user or _env("LWD_MQTT_USER", "admin")
    mqtt = None
    if need_mqtt:
        host, port = _host_port(args.mqtt or _env("LWD_MQTT", DEFAULT_MQTT), "--mqtt")
        ca = args.mqtt_ca or _env("LWD_MQTT_CA")
        password = _secret(
            _env("LWD_MQTT_PASSWORD"), args.mqtt_password_file or _env("LWD_MQTT_PASSWORD_FILE"), "mqtt password"
        )
        mqtt = MqttEndpoint(
            host,
            port,
            user,
            password,
            client_id=f"lwd-admin-{os.getpid()}",
            tls=TlsSettings(ca_file=ca) if ca else None,
        )
    return s3, mqtt, args.issued_by or user


def _publisher(args: argparse.Namespace, need_mqtt: bool = True, need_key: bool = False) -> PolicyPublisher:
    from lwd_protocol.signing import load_private_key

    s3, mqtt, issued_by = _endpoints(args, need_mqtt)
    key_path = args.key or _env("LWD_ADMIN_KEY")
    if need_key and not key_path:
        raise AdminError("no signing key: pass --key or set LWD_ADMIN_KEY (create one with `lwd admin keygen`)")
    key = load_private_key(key_path) if key_path else None
    return PolicyPublisher(PublisherConfig(s3=s3, mqtt=mqtt, issued_by=issued_by), key)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else text)


def _order_dict(ann: PolicyAnnouncement) -> dict[str, Any]:
    d = asdict(ann)
    d["key_id"] = (ann.signature or {}).get("key_id", "")
    d.pop("signature")
    return d


# --- commands --------------------------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace) -> int:
    from lwd_protocol.signing import generate_private_key, key_id, save_private_key, save_public_key

    out = Path(args.out)
    key = generate_private_key()
    private = out.with_name(out.name + ".key")
    public = out.with_name(out.name + ".pub")
    if private.exists() or public.exists():
        raise AdminError(f"{private} or {public} already exists: refusing to overwrite a key")
    save_private_key(private, key)
    save_public_key(public, key)
    _print(
        args,
        {"key_id": key_id(key), "private": str(private), "public": str(public)},
        f"key id {key_id(key)}: private {private} (keep it secret), public {public} (install on every robot)",
    )
    return 0


def _targets(args: argparse.Namespace) -> list[str | None]:
    """None = the fleet topic; otherwise each --robot gets its own pin (a group is several robots)."""
    return list(dict.fromkeys(args.robot)) if args.robot else [None]


def _report_orders(args: argparse.Namespace, orders: list[PolicyAnnouncement], verb: str) -> None:
    lines = []
    for ann in orders:
        target = "the fleet" if ann.target == FLEET_TARGET else f"robot {ann.target} (pinned)"
        lines.append(f"{verb} v{ann.version} -> {target}: manifest {ann.manifest_sha256[:12]}…, seq {ann.seq}")
    _print(args, {"orders": [_order_dict(a) for a in orders]}, "\n".join(lines))


def _export_checkpoint(args: argparse.Namespace, pub: PolicyPublisher, workdir: Path) -> Path:
    """Export ``--checkpoint`` as the next free version whose parent is the fleet's current order."""
    from lwd_learner.checkpoint_policy import CheckpointPolicyError, export_checkpoint

    if not Path(args.checkpoint).is_dir():
        raise AdminError(f"checkpoint folder {args.checkpoint} does not exist")
    version = pub.next_free_version()
    fleet = pub.current_orders().get(FLEET_TARGET)
    parent = fleet.version if fleet is not None and fleet.version < version else 0
    folder = workdir / f"v{version:06d}"
    try:
        manifest = export_checkpoint(args.checkpoint, folder, version=version, parent_version=parent, step=args.step)
    except (CheckpointPolicyError, FileNotFoundError) as exc:
        raise AdminError(str(exc)) from exc
    print(f"exported {args.checkpoint} as v{manifest.version} (parent v{parent}) to {folder}", file=sys.stderr)
    return folder


def cmd_push(args: argparse.Namespace) -> int:
    if (args.artifact_dir is None) == (args.checkpoint is None):
        raise AdminError("push takes exactly one of ARTIFACT_DIR or --checkpoint DIR")
    with _publisher(args, need_key=True) as pub, tempfile.TemporaryDirectory(prefix="lwd-push-") as tmp:
        folder = args.artifact_dir if args.checkpoint is None else _export_checkpoint(args, pub, Path(tmp))
        upload = pub.upload(folder)
        orders = [
            pub.announce("publish", upload.manifest, upload.manifest_sha256, robot=robot, note=args.note)
            for robot in _targets(args)
        ]
    _report_orders(args, orders, "published")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _publisher(args, need_key=True) as pub:
        orders = [pub.rollback(args.version, robot=robot, note=args.note) for robot in _targets(args)]
    _report_orders(args, orders, "rolled back to")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    with _publisher(args) as pub:
        pub.unpin(args.robot)
    _print(args, {"unpinned": args.robot}, f"{args.robot} follows the fleet order again")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _publisher(args, need_mqtt=not args.no_orders) as pub:
        versions = pub.list_versions()
        orders = {} if args.no_orders else pub.current_orders()
    ordered: dict[int, list[str]] = {}
    for target, ann in sorted(orders.items()):
        ordered.setdefault(ann.version, []).append(target)
    rows = [dict(asdict(v), ordered_for=ordered.get(v.version, [])) for v in versions]
    _print(args, rows, _format_versions(versions, ordered))
    return 0


def _format_versions(versions: list[VersionInfo], ordered: dict[int, list[str]]) -> str:
    if not versions:
        return "no policy versions in the store"
    lines = [f"{'version':>8} {'snapshot':>8} {'parent':>6}  {'created':<24} {'signer':<16} {'MB':>7}  eval / notes"]
    for v in versions:
        if not v.complete or v.problem:
            lines.append(
                f"{v.version:>8} {'-':>8} {'-':>6}  {'-':<24} {'-':<16} {v.size_bytes / 1e6:>7.2f}  {v.problem}"
            )
            continue
        extra = json.dumps(v.evaluation, sort_keys=True) if v.evaluation else v.notes[:60]
        if v.version in ordered:
            extra = f"[ordered: {', '.join(ordered[v.version])}] {extra}"
        lines.append(
            f"{v.version:>8} {v.training_snapshot:>8} {v.parent_version:>6}  {v.created_at:<24} "
            f"{v.key_id or 'UNSIGNED':<16} {v.size_bytes / 1e6:>7.2f}  {extra}"
        )
    return "\n".join(lines)


def fleet_status(pub: PolicyPublisher, coordinator_db: str | None, window_s: float) -> dict[str, Any]:
    """Per-robot rows from the retained status/orders and, if reachable, the Coordinator's store."""
    orders = pub.current_orders()
    statuses = pub.robot_statuses()
    robots: dict[str, dict[str, Any]] = {}
    fleet = orders.get(FLEET_TARGET)
    for robot, st in statuses.items():
        row = robots.setdefault(robot, {"robot_id": robot})
        if isinstance(st, RobotPolicyStatus):
            row.update(
                running=st.active_version,
                pending=st.pending_version,
                state=st.state,
                backend=st.engine_backend,
                message=st.message,
                rejected_version=st.rejected_version,
                rejected_reason=st.rejected_reason,
                status_age_s=max(0.0, (time.time_ns() - st.updated_at_ns) / 1e9),
                pending_uploads=st.extra.get("pending_uploads"),
            )
        else:
            row["message"] = st
    for target in orders:
        if target != FLEET_TARGET:
            robots.setdefault(target, {"robot_id": target})
    for robot, row in robots.items():
        order = orders.get(robot) or fleet
        row["ordered"] = order.version if order else None
        row["pinned"] = robot in orders
    db_note = ""
    if coordinator_db:
        db_note = _episode_stats(robots, Path(coordinator_db), window_s)
    return {
        "fleet_order": _order_dict(fleet) if fleet else None,
        "robots": [robots[r] for r in sorted(robots)],
        "coordinator": db_note,
    }


def _episode_stats(robots: dict[str, dict[str, Any]], db: Path, window_s: float) -> str:
    from lwd_learner.coordinator import SqliteSnapshotStore

    if not db.is_file():
        return f"coordinator database {db} not reachable: no episode statistics"
    store = SqliteSnapshotStore(db)
    try:
        stats = store.robot_stats()
        version = store.current_version()
        recent: dict[str, int] = {}
        since = time.time_ns() - int(window_s * 1e9)
        episodes = store.get_snapshot(version) if version else []
        for rec in [*episodes, *store.pending_episodes()]:
            if rec.committed_at_ns >= since:
                recent[rec.robot_id] = recent.get(rec.robot_id, 0) + 1
    finally:
        store.close()
    for robot, st in stats.items():
        row = robots.setdefault(robot, {"robot_id": robot, "ordered": None, "pinned": False})
        row.update(
            episodes=st.episodes,
            committed=st.committed,
            quarantined=st.quarantined,
            success_rate=(st.outcomes.get("success", 0) / st.episodes) if st.episodes else None,
            episodes_per_hour=recent.get(robot, 0) * 3600.0 / window_s,
        )
    return f"episodes from snapshot v{version} of {db}"


def cmd_status(args: argparse.Namespace) -> int:
    with _publisher(args) as pub:
        data = fleet_status(pub, args.coordinator_db or _env("LWD_COORDINATOR_DB") or None, args.window_s)
    _print(args, data, _format_status(data))
    return 0


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def _format_status(data: dict[str, Any]) -> str:
    fleet = data["fleet_order"]
    lines = [
        f"fleet order: v{fleet['version']} ({fleet['kind']} by {fleet['issued_by']} at {fleet['created_at']})"
        if fleet
        else "fleet order: none"
    ]
    lines.append(
        f"{'robot':<14} {'running':>7} {'pending':>7} {'ordered':>8} {'state':<11} {'backend':<16} "
        f"{'episodes':>8} {'ep/h':>6} {'success':>7} {'uploads':>7}  message"
    )
    for r in data["robots"]:
        ordered = _fmt(r.get("ordered")) + ("*" if r.get("pinned") else "")
        success = r.get("success_rate")
        message = r.get("message", "")
        if r.get("rejected_version"):
            message = f"{message} | last refused v{r['rejected_version']}: {r.get('rejected_reason', '')}"
        lines.append(
            f"{r['robot_id']:<14} {_fmt(r.get('running')):>7} {_fmt(r.get('pending')):>7} {ordered:>8} "
            f"{_fmt(r.get('state')):<11} {_fmt(r.get('backend')):<16} {_fmt(r.get('episodes')):>8} "
            f"{_fmt(r.get('episodes_per_hour'), '.1f'):>6} "
            f"{(f'{success:.0%}' if success is not None else '-'):>7} {_fmt(r.get('pending_uploads')):>7}  {message}"
        )
    if data["coordinator"]:
        lines.append(data["coordinator"])
    lines.append("(* = pinned by a per-robot order)")
    return "\n".join(lines)


# --- wiring ----------------------------------------------------------------------------------------
def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `admin` and its subcommands to an argparse subparsers object.

    Every subcommand sets ``args.func = run``: call ``args.func(args)`` to get its exit status.
    """
    admin = subparsers.add_parser(
        "admin",
        help="push, roll back, list and watch policies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    common = _common_parser()

    p = sub.add_parser("keygen", parents=[common], help="create an Ed25519 signing key pair")
    p.add_argument("--out", required=True, help="path prefix: writes PREFIX.key and PREFIX.pub")
    p.set_defaults(func=run, admin_handler=cmd_keygen)

    p = sub.add_parser("push", parents=[common], help="sign, upload and announce an artifact folder or checkpoint")
    p.add_argument("artifact_dir", type=Path, nargs="?", help="an artifact folder (manifest.json + files)")
    p.add_argument("--checkpoint", type=Path, help="a learner checkpoint folder to export (instead of ARTIFACT_DIR)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step to export (default: the latest)")
    p.add_argument(
        "--robot", action="append", help="pin only this robot (canary) instead of the fleet; repeat for a group"
    )
    p.add_argument("--note", default="", help="free text recorded in the order")
    p.set_defaults(func=run, admin_handler=cmd_push)

    p = sub.add_parser("rollback", parents=[common], help="order the fleet or a robot back to an older version")
    p.add_argument("version", type=int)
    p.add_argument("--robot", action="append", help="roll back only this robot (pins it); repeat for a group")
    p.add_argument("--note", default="", help="why (recorded in the order)")
    p.set_defaults(func=run, admin_handler=cmd_rollback)

    p = sub.add_parser("unpin", parents=[common], help="let a pinned robot follow the fleet order again")
    p.add_argument("--robot", required=True)
    p.set_defaults(func=run, admin_handler=cmd_unpin)

    p = sub.add_parser("list", parents=[common], help="policy versions in the store")
    p.add_argument("--no-orders", action="store_true", help="do not ask the broker which versions are ordered")
    p.set_defaults(func=run, admin_handler=cmd_list)

    p = sub.add_parser("status", parents=[common], help="which robot runs which version, episodes and success")
    p.add_argument("--coordinator-db", default=None, help="Coordinator SQLite file (LWD_COORDINATOR_DB)")
    p.add_argument("--window-s", type=float, default=3600.0, help="window for the episode rate")
    p.set_defaults(func=run, admin_handler=cmd_status)
    return admin


def run(args: argparse.Namespace) -> int:
    """Run a parsed admin command; errors become one line on stderr and exit status 1."""
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError as TransportError

    from lwd_protocol.manifest import ManifestError
    from lwd_protocol.signing import KeyFileError
    from lwd_protocol.transport import MqttConnectError

    try:
        return int(args.admin_handler(args))
    except (AdminError, PublishError, ManifestError, KeyFileError, MqttConnectError, ValueError) as exc:
        print(f"lwd admin {args.admin_command}: error: {exc}", file=sys.stderr)
    except S3Error as exc:
        print(f"lwd admin {args.admin_command}: object store error: {exc.code}: {exc.message}", file=sys.stderr)
    except (MinioException, TransportError) as exc:  # e.g. http:// to an HTTPS store, or an untrusted CA
        hint = "check --s3 and --s3-ca (LWD_S3, LWD_S3_CA)"
        print(f"lwd admin {args.admin_command}: cannot talk to the object store ({hint}): {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"lwd admin {args.admin_command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """`lwd admin ...` through the current cli.py (which passes the arguments after `admin`)."""
    parser = argparse.ArgumentParser(prog="lwd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["admin", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
