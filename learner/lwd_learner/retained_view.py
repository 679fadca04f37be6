"""Retained MQTT state read through subscriptions: one-off snapshots, or a standing view kept current.

Reading retained messages means subscribing, waiting for the SUBACK and then for a short silence
(the broker sends retained messages right after the SUBACK, with no end marker). That wait,
``quiet_s``, is paid on every one-off read. A publisher that announces policies again and again
keeps a *standing* view of the policy topics instead: it pays the wait once, then every later
retained publish (its own or another admin's) updates the view as it arrives. The view is dropped
when the connection drops (a clean session loses its subscriptions) and rebuilt on the next read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


class RetainedReadError(RuntimeError):
    """The broker did not acknowledge the subscription in time."""


@dataclass
class _View:
    topic_filter: str
    payloads: dict[str, bytes] = field(default_factory=dict)  # topic -> latest payload (b"" = cleared)
    last_message: float = field(default_factory=time.monotonic)
    subscribed: threading.Event = field(default_factory=threading.Event)
    ready: bool = False  # initial retained burst collected


class RetainedReader:
    """Snapshots of retained payloads under topic filters, on one connected paho v2 client."""

    def __init__(self, client: Any, qos: int, quiet_s: float, max_wait_s: float) -> None:
        self._client = client
        self._qos = qos
        self._quiet_s = quiet_s
        self._max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._views: dict[str, _View] = {}  # standing views by filter
        self._pending: dict[int, _View] = {}  # SUBACK mid -> view
        self._early_acks: set[int] = set()  # SUBACKs that beat the bookkeeping after subscribe()
        previous_disconnect = client.on_disconnect

        def on_disconnect(*args: Any) -> None:
            with self._lock:  # subscriptions died with the session: rebuild on the next read
                self._views.clear()
            if previous_disconnect is not None:
                previous_disconnect(*args)

        client.on_disconnect = on_disconnect
        client.on_subscribe = self._on_subscribe

    def read(self, topic_filter: str, keep: bool = False) -> dict[str, bytes]:
        """Non-empty retained payloads under `topic_filter` (topic -> payload).

        keep=True leaves the subscription standing, so later reads of the same filter return at once.
        """
        with self._lock:
            view = self._views.get(topic_filter)
            if view is not None and view.ready:
                return {t: p for t, p in view.payloads.items() if p}
        self._await_connection()
        view = self._subscribe(topic_filter)
        try:
            self._await_burst(view)
        except BaseException:
            self._drop(view)
            raise
        with self._lock:
            view.ready = True
            snapshot = {t: p for t, p in view.payloads.items() if p}
            if keep:
                self._views[topic_filter] = view
        if not keep:
            self._drop(view)
        return snapshot

    def note_published(self, topic: str, payload: bytes) -> None:
        """Record our own retained publish in standing views now, before the broker echoes it back."""
        from paho.mqtt.client import topic_matches_sub

        with self._lock:
            for view in self._views.values():
                if topic_matches_sub(view.topic_filter, topic):
                    view.payloads[topic] = payload

    # ---------------------------------------------------------------------------------------------
    def _await_connection(self) -> None:
        deadline = time.monotonic() + self._max_wait_s
        while not self._client.is_connected():  # e.g. reconnecting after the broker dropped us
            if time.monotonic() > deadline:
                raise RetainedReadError(f"not connected to the broker for {self._max_wait_s} s")
            time.sleep(0.02)

    def _subscribe(self, topic_filter: str) -> _View:
        view = _View(topic_filter)

        def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
            with self._lock:
                view.payloads[msg.topic] = bytes(msg.payload)
                view.last_message = time.monotonic()

        self._client.message_callback_add(topic_filter, on_message)
        _rc, mid = self._client.subscribe(topic_filter, qos=self._qos)  # not under our lock: paho calls back
        with self._lock:
            if mid in self._early_acks:
                self._early_acks.discard(mid)
                view.subscribed.set()
            else:
                self._pending[mid] = view
        return view

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, _codes: Any, _props: Any) -> None:
        with self._lock:
            view = self._pending.pop(mid, None)
            if view is None:
                self._early_acks.add(mid)
                return
        view.last_message = time.monotonic()
        view.subscribed.set()

    def _await_burst(self, view: _View) -> None:
        if not view.subscribed.wait(self._max_wait_s):
            raise RetainedReadError(f"no SUBACK for {view.topic_filter} within {self._max_wait_s} s")
        deadline = time.monotonic() + self._max_wait_s
        while time.monotonic() < deadline:
            with self._lock:
                silent_for = time.monotonic() - view.last_message
            if silent_for >= self._quiet_s:
                return
            time.sleep(0.02)

    def _drop(self, view: _View) -> None:
        self._client.message_callback_remove(view.topic_filter)
        self._client.unsubscribe(view.topic_filter)
