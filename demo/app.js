// The live grid: several tabs edit one table together through rtsync.
// State is rebuilt from the table's events (recent_changes, then live).
import { RtsyncClient } from "./rtsync.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") || `guest-${Math.random().toString(36).slice(2, 6)}`;
const tableId = params.get("table") || "demo";
const RECORDS = ["r1", "r2", "r3", "r4", "r5"];
const FIELDS = ["name", "status", "owner", "due"];

const values = new Map(); // "r|f" -> value
const versions = new Map(); // record -> version
const cells = new Map(); // "r|f" -> {td, input}
const log = (line) => (document.getElementById("log").textContent = `${line}\n${document.getElementById("log").textContent}`.slice(0, 2000));

const proto = location.protocol === "https:" ? "wss:" : "ws:";
const client = new RtsyncClient({ url: `${proto}//${location.host}/ws`, devUser: { userId: user, userName: params.get("name") || user } });
window.rtsync = { client, values, versions };
document.getElementById("me").textContent = user;

function render(recordId, fieldId) {
  const cell = cells.get(`${recordId}|${fieldId}`);
  if (cell && document.activeElement !== cell.input) cell.input.value = values.get(`${recordId}|${fieldId}`) ?? "";
}

function build() {
  const grid = document.getElementById("grid");
  grid.innerHTML = `<tr><th></th>${FIELDS.map((f) => `<th>${f}</th>`).join("")}</tr>`;
  for (const r of RECORDS) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<th>${r}</th>`;
    for (const f of FIELDS) {
      const td = document.createElement("td");
      const input = document.createElement("input");
      input.dataset.cell = `${r}|${f}`;
      input.addEventListener("focus", () => client.moveCursor(tableId, { recordId: r, fieldId: f }));
      input.addEventListener("change", () => edit(r, f, input.value));
      td.appendChild(input);
      tr.appendChild(td);
      cells.set(`${r}|${f}`, { td, input });
    }
    grid.appendChild(tr);
  }
}

async function edit(recordId, fieldId, value) {
  const key = `${recordId}|${fieldId}`;
  const before = values.get(key);
  values.set(key, value);
  const result = await client.change(tableId, recordId, [{ fieldId, oldValue: before ?? null, newValue: value }], {
    version: versions.get(recordId), onConflict: "reject",
  });
  if (result.status !== "rejected") versions.set(recordId, Math.max(versions.get(recordId) ?? 0, result.version));
  log(`${recordId}.${fieldId} = ${value}: ${result.status}`);
}

client.on("change", (e) => {
  if (e.entityType !== "record") return;
  versions.set(e.entityId, Math.max(versions.get(e.entityId) ?? 0, e.version));
  for (const c of e.changes ?? []) {
    values.set(`${e.entityId}|${c.fieldId}`, c.newValue);
    render(e.entityId, c.fieldId);
  }
});

client.on("rollback", ({ recordId, result }) => {
  versions.set(recordId, result.current?.version ?? versions.get(recordId));
  for (const f of FIELDS) {
    const v = result.current?.fields?.[f];
    values.set(`${recordId}|${f}`, v ?? "");
    const cell = cells.get(`${recordId}|${f}`);
    if (cell) {
      cell.input.value = v ?? "";
      cell.td.dataset.rolledBack = "1";
    }
  }
  log(`${recordId}: conflict, rolled back to version ${result.current?.version}`);
});

function paintPresence() {
  const users = client.users(tableId);
  // Names and ids come from other users: rendered as text, never as HTML.
  const bar = document.getElementById("users");
  bar.replaceChildren(
    ...users.map((u) => {
      const span = document.createElement("span");
      span.className = "user";
      span.dataset.user = u.userId;
      span.style.background = u.color;
      span.textContent = u.userName;
      return span;
    }),
  );
  for (const { td } of cells.values()) {
    td.classList.remove("remote", "selected");
    delete td.dataset.cursorOf;
    td.querySelector(".tag")?.remove();
  }
  for (const u of users) {
    if (u.userId === user) continue;
    if (u.cursor) {
      const cell = cells.get(`${u.cursor.recordId}|${u.cursor.fieldId}`);
      if (cell) {
        cell.td.classList.add("remote");
        cell.td.style.setProperty("--c", u.color);
        cell.td.dataset.cursorOf = u.userId;
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = u.userName;
        cell.td.appendChild(tag);
      }
    }
  }
}
for (const ev of ["users", "joined", "left", "cursor", "selection"]) client.on(ev, paintPresence);

client.on("status", (s) => {
  const el = document.getElementById("status");
  el.textContent = s;
  el.className = s;
});
document.getElementById("offline").addEventListener("change", (e) => client.setOffline(e.target.checked));
setInterval(() => client.heartbeat(tableId), 30_000);

build();
await client.connect();
await client.subscribe(tableId, "grid");
