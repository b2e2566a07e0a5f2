"""rtsync's /ws from python `websockets` with permessage-deflate (its
default), run by tests/compression.rs against a real sidecar.

Two connections (JSON subprotocol, token in the URL) check that the
handshake answer carries permessage-deflate with no context takeover;
the reader subscribes; the writer sends a long edit (a compressed frame:
`websockets` compresses what it sends); the reader receives it (compressed
by the sidecar, inflated by `websockets`) and both read the same record
back with `load_records`. Exits non-zero with the reason on the first
failure.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect

URL = os.environ["RTSYNC_WS_URL"]
TOKENS = json.loads(os.environ["RTSYNC_TOKENS"])
WAIT = 10


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


async def open_as(user):
    ws = await connect(f"{URL}?token={TOKENS[user]}", subprotocols=["rtsync.v1.json"],
                       compression="deflate", max_size=None)
    answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    check(answer.startswith("permessage-deflate") and "server_no_context_takeover" in answer,
          f"{user}: handshake answer {answer!r}")
    await until(ws, lambda m: m[0] == "authenticated")
    return ws


async def until(ws, pred):
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if pred(message):
            return message


async def request(ws, rid, event, data):
    await ws.send(json.dumps([event, data, rid]))
    reply = await until(ws, lambda m: len(m) > 2 and m[2] == rid)
    check(reply[0] == "ack", f"{event}: {reply}")
    return reply[1]


async def main():
    reader = await open_as("u1")
    writer = await open_as("u2")
    await request(reader, 1, "subscribe_to_table", {"tableId": "py-deflate"})
    text = " ".join(f"cell {i} of a long pasted column" for i in range(300))
    ack = await request(writer, 1, "record_change", {
        "type": "update", "recordId": "r1", "tableId": "py-deflate",
        "changes": [{"fieldId": "note", "newValue": text}]})
    check(ack.get("status") == "applied", f"write: {ack}")
    event = await until(reader, lambda m: m[0] == "record_change")
    check(event[1]["changes"][0]["newValue"] == text, "the reader got the long edit")
    pages = [await request(ws, 9, "load_records", {"tableId": "py-deflate"}) for ws in (reader, writer)]
    check(pages[0] == pages[1] and pages[0]["records"][0]["fields"]["note"] == text,
          "both read the same record back")
    await reader.close()
    await writer.close()
    print("ok")


asyncio.run(main())
