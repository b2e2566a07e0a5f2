"""rtsync's /socket.io/ from a non-JavaScript client: python-socketio 5
(run by tests/socketio_python.rs against two real sidecars and one Redis).

An intern (a token that hides `salary`) and alice connect with a JWT in
the CONNECT auth, subscribe with an ack, alice writes, the intern receives
the change masked; the intern drops, alice writes twice more, the intern
comes back and recovers exactly the two changes it missed, in order,
masked. Exits non-zero with the reason on the first failure.
"""

import json
import os
import queue
import sys

import socketio

URLS = [u for u in os.environ["RTSYNC_HTTP_URLS"].split(",") if u]
TOKENS = json.loads(os.environ["RTSYNC_TOKENS"])
WAIT = 10
TABLE = "py-t1"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def client(user, url, transports):
    """A connected client of `user`; its change events land in `.events`."""
    sio = socketio.Client(reconnection=False)
    sio.events = queue.Queue()

    @sio.on("record_change")
    def on_change(event):
        sio.events.put(event)

    @sio.on("missed_events")
    def on_missed(events):
        for e in events:
            sio.events.put(e)

    sio.connect(url, auth={"token": TOKENS[user]}, transports=transports, wait_timeout=WAIT)
    return sio


def change(record, fields):
    return {"type": "update", "recordId": record, "tableId": TABLE,
            "changes": [{"fieldId": f, "newValue": v} for f, v in fields.items()]}


def next_event(sio, what):
    try:
        return sio.events.get(timeout=WAIT)
    except queue.Empty:
        check(False, f"no event: {what}")


def main():
    for transports in (["websocket"], ["polling"]):
        run(transports)
    print("ok")


def run(transports):
    alice = client("alice", URLS[0], ["websocket"])
    intern = client("intern", URLS[1], transports)
    sub = intern.call("subscribe_to_table", {"tableId": TABLE}, timeout=WAIT)
    check(sub.get("tableId") == TABLE, f"subscribe ack {sub}")
    check(sub.get("fields", {}).get("salary") == "none", f"the grant in the ack {sub}")
    alice.call("subscribe_to_table", {"tableId": TABLE}, timeout=WAIT)

    r = alice.call("record_change", change("r1", {"name": "Ann", "salary": 90000}), timeout=WAIT)
    check(r.get("status") == "applied", f"commit {r}")
    e = next_event(intern, "the live change")
    check(e["id"] == r["eventId"], f"the live change's id {e}")
    fields = [c["fieldId"] for c in e["changes"]]
    check(fields == ["name"], f"salary masked for the intern: {e}")
    last = e["id"]

    intern.disconnect()
    missed = []
    for n in range(2):
        r = alice.call("record_change", change(f"r{n + 2}", {"name": f"n{n}", "salary": n}), timeout=WAIT)
        check(r.get("status") == "applied", f"commit while away {r}")
        missed.append(r["eventId"])

    back = client("intern", URLS[1], transports)
    ack = back.call("subscribe_to_table", {"tableId": TABLE, "lastEventId": last}, timeout=WAIT)
    check(ack.get("missedEventsCount") == 2, f"recovery ack {ack}")
    got = [next_event(back, "a missed change") for _ in missed]
    check([g["id"] for g in got] == missed, f"missed changes once, in order: {got}")
    check(all("salary" not in json.dumps(g["changes"]) for g in got), f"masked: {got}")
    check(back.events.empty(), "nothing more"); print("ran", transports, file=sys.stderr)
    back.disconnect()
    alice.disconnect()


if __name__ == "__main__":
    main()
