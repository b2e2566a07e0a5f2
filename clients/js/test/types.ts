// Compiled (not run) by `npm run typecheck`: the `ws` package is accepted as
// the WebSocket option without a cast, and the public types line up.
import WebSocket from "ws";
import { RtsyncClient, type CommitResult, type LiveRecord } from "../src/index.js";

const client = new RtsyncClient({ url: "ws://127.0.0.1:4000/ws", getToken: async () => "jwt", WebSocket });
const table = client.table("t1", { onConflict: "reject" });
const rec: LiveRecord | undefined = table.get("r1");
const done: Promise<CommitResult> = table.set("r1", { name: "x" });
client.on("status", (s) => s.status === "unauthorized" && console.log(s.closeCode, s.error?.message));
void rec;
void done;
const history: Promise<import("../src/index.js").HistoryPage> = table.history("r1", { before: "1-0", limit: 10 });
void history;
// v1.3 views: `view` (or `viewId`), setView, and the enter/leave events.
const mine = client.table("t2", { view: "my-tasks" });
mine.on("left", ({ recordId }) => console.log(recordId));
client.on("recordEntered", ({ record }) => console.log(record.version));
const switched: Promise<void> = mine.setView(undefined);
void switched;
