"""What a local stack keeps across ``ferry dev down`` / ``ferry dev up``, and what it cannot.

Kept: the Firestore emulator's documents (every manifest, partition, instance, alert — exported through
the emulator's export endpoint before it stops, imported with ``--import-data`` when it starts), the
sink and the logs (files under the home). Rebuilt: the Pub/Sub topics and subscriptions (from
``infra/`` and by re-applying the stored event types, whose provisioning is idempotent). Lost: messages
still undelivered in Pub/Sub subscriptions — ``down`` counts and names them first, and ``--drain``
delivers the event types' backlogs into the sink before stopping. Messages of the hold subscriptions
(quarantined events, dead letters: nothing else keeps them) are counted and saved by ``down`` and
published again to their topics by the next ``up``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from ferry.api.identity import SECRET_HEADER
from ferry.errors import InfraError
from ferry.gabo.names import Names, streams_of
from ferry.infra.model import Infra

EXPORT_META = "*.overall_export_metadata"


def data_dir(home: Path) -> Path:
    return Path(home) / "data"


def firestore_export(home: Path) -> Path | None:
    """The metadata file of the last export (what ``--import-data`` takes), None when there is none."""
    found = sorted((data_dir(home) / "firestore").glob(f"*/{EXPORT_META}"))
    return found[-1] if found else None


def export_firestore(address: str, project: str, home: Path, timeout_s: float = 60.0) -> Path:
    """Export every document of the emulator at ``address`` into ``<home>/data/firestore`` (replacing the
    previous export only once the new one is complete)."""
    target = data_dir(home) / "firestore"
    fresh = data_dir(home) / "firestore.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    url = f"http://{address}/emulator/v1/projects/{project}:export"
    try:
        resp = httpx.post(url, json={"database": f"projects/{project}/databases/(default)",
                                     "export_directory": str(fresh)}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise InfraError(f"exporting the Firestore emulator's data failed: {exc}") from exc
    if resp.status_code >= 400 or not list(fresh.glob(f"*/{EXPORT_META}")):
        raise InfraError(f"the Firestore emulator at {address} refused the export: HTTP {resp.status_code} "
                         f"{resp.text[:300]}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(fresh, target)
    meta = firestore_export(home)
    assert meta is not None
    return meta


def wipe(home: Path) -> list[str]:
    """Delete what a stack keeps (documents, sink, logs, scheduler record); returns what was removed."""
    home = Path(home)
    removed = []
    for name in ("data", "sink", "logs", "scheduler-last.json"):
        path = home / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists():
            path.unlink()
            removed.append(name)
    return removed


def _headers(secret: str) -> dict[str, str]:
    """The stack's own calls are operational: they present its secret."""
    return {SECRET_HEADER: secret} if secret else {}


def _api_items(api_url: str, plural: str, secret: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    with httpx.Client(base_url=api_url, timeout=30, headers=_headers(secret)) as http:
        while True:
            params = {"limit": 1000, **({"page_token": token} if token else {})}
            page = http.get(f"/v1/{plural}", params=params).raise_for_status().json()
            items += page["items"]
            token = page.get("next_page_token")
            if not token:
                return items


def event_types(api_url: str, secret: str = "") -> list[dict[str, Any]]:
    """The stored EventType manifests (without their status), through the stack's API."""
    return [{k: v for k, v in m.items() if k != "status"} for m in _api_items(api_url, "eventtypes", secret)]


def reprovision(api_url: str, secret: str = "") -> int:
    """Re-apply the stored event types: unchanged, so nothing is written and no ownership is checked,
    but their provisioning runs and recreates their topics and subscriptions. Returns how many."""
    manifests = event_types(api_url, secret)
    if manifests:
        resp = httpx.post(f"{api_url}/v1/apply", json={"manifests": manifests}, timeout=120, headers=_headers(secret))
        if resp.status_code >= 400:
            raise InfraError(f"recreating the event types' topics failed: HTTP {resp.status_code} {resp.text[:300]}")
    return len(manifests)


def _emulator_clients(pubsub_host: str) -> tuple[Any, Any]:
    from google.cloud import pubsub_v1

    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host  # read when the client is built
    try:
        return pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


def _pull_all(subscriber: Any, path: str, cap: int) -> list[Any]:
    """Every available message of ``path`` (up to ``cap``), handed straight back (ack deadline 0)."""
    from google.api_core import exceptions as gexc

    got: dict[str, Any] = {}
    try:
        while len(got) < cap:
            resp = subscriber.pull(request={"subscription": path, "max_messages": 1000,
                                            "return_immediately": True}, timeout=10)
            fresh = [m for m in resp.received_messages if m.message.message_id not in got]
            if not fresh:
                break
            got.update((m.message.message_id, m) for m in fresh)
    except (gexc.NotFound, gexc.FailedPrecondition, gexc.InvalidArgument):
        return []  # gone, or a push subscription
    ack_ids = [m.ack_id for m in got.values()]
    for i in range(0, len(ack_ids), 1000):
        subscriber.modify_ack_deadline(request={"subscription": path, "ack_ids": ack_ids[i:i + 1000],
                                                "ack_deadline_seconds": 0})
    return list(got.values())


def pending_messages(pubsub_host: str, project: str, subscriptions: Iterable[str], cap: int = 10_000) -> dict[str, int]:
    """Undelivered messages per pull subscription (counted by pulling them and handing them straight
    back: ``modify_ack_deadline`` 0), at most ``cap`` each; subscriptions that do not exist are skipped."""
    from google.api_core import exceptions as gexc

    subscriber, publisher = _emulator_clients(pubsub_host)
    counts: dict[str, int] = {}
    try:
        for name in subscriptions:
            n = len(_pull_all(subscriber, f"projects/{project}/subscriptions/{name}", cap))
            if n:
                counts[name] = n
    except gexc.GoogleAPICallError as exc:
        raise InfraError(f"counting undelivered Pub/Sub messages failed: {exc}") from exc
    finally:
        subscriber.close()
        publisher.transport.close()
    return counts


HELD_FILE = "held-messages.json"


def keep_held(pubsub_host: str, project: str, holds: dict[str, str], home: Path,
              cap: int = 10_000) -> dict[str, int]:
    """Save the messages of every hold subscription (``holds``: subscription → its topic — quarantined
    events, dead letters) into ``<home>/data/held-messages.json`` for the next ``up`` to publish again
    (:func:`restore_held`); returns how many per subscription. What a hold keeps is what nobody else
    keeps: a ``down`` must not lose it."""
    import base64
    import json

    from google.api_core import exceptions as gexc

    subscriber, publisher = _emulator_clients(pubsub_host)
    kept: dict[str, Any] = {}
    try:
        for name, topic in holds.items():
            msgs = _pull_all(subscriber, f"projects/{project}/subscriptions/{name}", cap)
            if msgs:
                kept[name] = {"topic": topic, "messages": [
                    {"data": base64.b64encode(m.message.data).decode(), "attributes": dict(m.message.attributes)}
                    for m in msgs]}
    except gexc.GoogleAPICallError as exc:
        raise InfraError(f"saving the held Pub/Sub messages failed: {exc}") from exc
    finally:
        subscriber.close()
        publisher.transport.close()
    path = data_dir(home) / HELD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, path)
    return {name: len(v["messages"]) for name, v in kept.items()}


def restore_held(pubsub_host: str, project: str, home: Path) -> dict[str, int]:
    """Publish again what the last ``down`` saved from the holds (to each hold's topic, whose hold is its
    only subscription), then forget the file. Returns how many per subscription."""
    import base64
    import json

    path = data_dir(home) / HELD_FILE
    if not path.exists():
        return {}
    kept = json.loads(path.read_text())
    subscriber, publisher = _emulator_clients(pubsub_host)
    restored: dict[str, int] = {}
    try:
        for name, v in kept.items():
            topic = f"projects/{project}/topics/{v['topic']}"
            futures = [publisher.publish(topic, base64.b64decode(m["data"]), **m["attributes"]) for m in v["messages"]]
            for f in futures:
                f.result(timeout=60)
            restored[name] = len(futures)
    except Exception as exc:  # noqa: BLE001 — kept for the next up: the file stays
        raise InfraError(f"restoring the held Pub/Sub messages failed (kept in {path}): {exc}") from exc
    finally:
        subscriber.close()
        publisher.transport.close()
    path.unlink()
    return restored


def type_holds(manifest: dict[str, Any]) -> dict[str, str]:
    """An event type's hold subscriptions → their topics: its quarantine's, and each stream's dead
    letters' (``ferry.gabo.provisioning.reconcile.type_resources``)."""
    name = manifest["metadata"]["name"]
    held = [Names(name).quarantine]
    held += [Names(name, stream).dead_letter for stream in streams_of(float((manifest.get("spec") or {}).get("darkload") or 0))]
    return {Names(name).hold(t): t for t in held}


def drain(api_url: str, names: Iterable[str], budget_s: float = 50.0, secret: str = "") -> dict[str, int]:
    """Deliver each event type's backlog into the sink now (one work order each, until drained)."""
    written: dict[str, int] = {}
    for name in names:
        resp = httpx.post(f"{api_url}/v1/deliver", json={"event_type": name, "budget_s": budget_s,
                                                         "until_drained": True}, timeout=budget_s + 60,
                           headers=_headers(secret))
        if resp.status_code >= 400:
            raise InfraError(f"draining event type {name} failed: HTTP {resp.status_code} {resp.text[:300]}")
        written[name] = int(resp.json().get("written", 0))
    return written


def save(state: dict[str, Any], infra: Infra, alive_names: set[str], drain_first: bool, keep_data: bool) -> dict[str, Any]:
    """Before ``down`` stops the emulators (``alive_names``: the stack's own live components): drain the
    event types (``drain_first``), count and name the undelivered messages, export the documents."""
    out: dict[str, Any] = {"drained": {}, "undelivered": {}, "exported": None}
    api = state.get("api_url") if "api" in alive_names else None
    secret = str(state.get("stack_secret") or "")
    if "pubsub" in alive_names:
        pubsub = state["env"]["PUBSUB_EMULATOR_HOST"]
        manifests = event_types(api, secret) if api else []
        types = [m["metadata"]["name"] for m in manifests]
        subs = {Names(t).subscription: t for t in types}
        if drain_first and api and types:
            out["drained"] = drain(api, types, secret=secret)
        holds = {s.name: s.topic for s in infra.dead_letter_holds()}
        for m in manifests:
            holds.update(type_holds(m))
        infra_subs = {s.name: None for s in infra.subscriptions}
        counts = pending_messages(pubsub, state["project"], [*subs, *infra_subs])
        out["undelivered"] = {name: {"messages": n, "event_type": subs.get(name)} for name, n in counts.items()}
        # quarantined events and dead letters: counted, and kept for the next `up` (not lost with the emulator)
        out["held"] = (keep_held(pubsub, state["project"], holds, Path(state["home"])) if keep_data
                       else pending_messages(pubsub, state["project"], holds))
        out["held_kept"] = keep_data
    if keep_data and "firestore" in alive_names:
        out["exported"] = str(export_firestore(state["env"]["FIRESTORE_EMULATOR_HOST"], state["project"],
                                                    Path(state["home"])).parent)
    return out
