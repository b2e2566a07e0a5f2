// The live grid: a launch plan several people edit together through rtsync.
// It renders one source of truth, the SDK's LiveTable: records loaded with
// load_records, kept current by events, the user's own edits on top until
// the server answers, rolled back when refused.
import { RtsyncClient } from "./rtsync.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") || `guest-${Math.random().toString(36).slice(2, 6)}`;
const tableId = params.get("table") || "demo";
// `?role=intern`: a user who may not see "Days", may not edit "Status", and
// sees (and may edit) only the tasks they own: a row grant (protocol 2.2),
// `$user` being their id. Development mode only: the grant rides on the dev
// `authenticate`; in production it is the token's `tables` claim.
const MINE = { field: "owner", op: "eq", value: "$user" };
const ROLES = {
  intern: { "*": { access: "rw", fields: { estimate: "none", status: "r" }, rows: MINE } },
};
// The views a user can switch between (protocol 3.5): the whole table, and
// "My tasks", whose filter the first user stores when seeding the table.
const VIEWS = { grid: "All tasks", "my-tasks": "My tasks" };
const role = params.get("role");

// Six typed fields, and the 30 rows a fresh table is seeded with.
const FIELDS = [
  { id: "task", label: "Task", type: "text" },
  { id: "owner", label: "Owner", type: "text" },
  { id: "status", label: "Status", type: "select", options: ["Todo", "In progress", "Blocked", "Done"] },
  { id: "estimate", label: "Days", type: "number" },
  { id: "due", label: "Due", type: "date" },
  { id: "shipped", label: "Shipped", type: "checkbox" },
];
const TASKS = ["Pricing page", "Beta invites", "Press kit", "Onboarding emails", "Status page", "Billing webhooks",
  "SSO for teams", "Audit log", "CSV import", "Mobile layout", "Keyboard shortcuts", "Help center", "Changelog",
  "Load test", "Security review", "Data export", "Dark mode", "Launch tweet", "Partner demo", "Support rota",
  "Refund policy", "Usage limits", "API docs", "Rate limits", "Backups drill", "Incident runbook", "Trial emails",
  "Landing video", "Metrics dashboard", "Launch party"];
// Owners are user ids, so `?user=alice` has tasks in "My tasks".
const OWNERS = ["alice", "bob", "chen", "dara", "eli", "farah"];
const seedRows = () => TASKS.map((task, i) => ({
  id: `r${String(i + 1).padStart(2, "0")}`,
  fields: { task, owner: OWNERS[i % 6], status: FIELDS[2].options[i % 4], estimate: (i % 5) + 1,
    due: `2026-12-${String((i % 28) + 1).padStart(2, "0")}`, shipped: i % 4 === 3 },
}));

const proto = location.protocol === "https:" ? "wss:" : "ws:";
const client = new RtsyncClient({
  url: `${proto}//${location.host}/ws`,
  devUser: { userId: user, userName: params.get("name") || user, ...(ROLES[role] ? { tables: ROLES[role] } : {}) },
});
const startView = VIEWS[params.get("view")] ? params.get("view") : "grid";
const table = client.table(tableId, { onConflict: "reject", view: startView });
const rows = new Map(); // recordId -> { tr, cells: Map(fieldId -> {td, input}) }
let editing; // this user's editing indicator (the focused cell), if any
window.rtsync = { client, table };
document.getElementById("me").textContent = user;

// ---- the grid ---------------------------------------------------------------

const grid = document.getElementById("grid");
// The columns the user may see, from the grant the server reported (every
// column until the table is joined).
const columns = () => FIELDS.filter((f) => table.canRead(f.id));

function paintHeader() {
  const tr = document.createElement("tr");
  tr.id = "head";
  tr.appendChild(document.createElement("th"));
  for (const f of columns()) {
    const th = document.createElement("th");
    th.dataset.field = f.id;
    th.textContent = f.label;
    if (!table.canWrite(f.id)) {
      th.dataset.locked = "1";
      th.title = "read-only for you";
      // Drawn in CSS: no emoji font needed.
      const lock = document.createElement("span");
      lock.className = "lock";
      lock.setAttribute("aria-label", "read-only");
      th.append(" ", lock);
    }
    tr.appendChild(th);
  }
  document.getElementById("head")?.remove();
  grid.prepend(tr);
}
paintHeader();

function makeInput(recordId, f) {
  let input;
  if (f.type === "select") {
    input = document.createElement("select");
    for (const o of f.options) input.add(new Option(o, o));
  } else {
    input = document.createElement("input");
    input.type = f.type;
  }
  input.dataset.cell = `${recordId}|${f.id}`;
  if (!table.canWrite(f.id)) input.disabled = true;
  input.addEventListener("focus", () => {
    client.moveCursor(tableId, { recordId, fieldId: f.id });
    // Others see a typing badge in this cell until blur (renewed by the SDK).
    if (!input.disabled) editing = table.startEditing(recordId, f.id);
  });
  input.addEventListener("blur", () => {
    editing?.stop();
    editing = undefined;
  });
  input.addEventListener("change", () => void edit(recordId, f, input));
  return input;
}

function row(recordId) {
  let r = rows.get(recordId);
  if (r) return r;
  const tr = document.createElement("tr");
  tr.dataset.record = recordId;
  const th = document.createElement("th");
  th.textContent = recordId;
  th.className = "rowhead";
  th.title = "show this record's history";
  th.addEventListener("click", () => void showHistory(recordId));
  tr.appendChild(th);
  const cells = new Map();
  for (const f of columns()) {
    const td = document.createElement("td");
    const input = makeInput(recordId, f);
    td.appendChild(input);
    tr.appendChild(td);
    cells.set(f.id, { td, input });
  }
  // Keep rows in record-id order.
  const after = [...rows.keys()].filter((id) => id > recordId).sort()[0];
  grid.insertBefore(tr, after ? rows.get(after).tr : null);
  r = { tr, cells };
  rows.set(recordId, r);
  return r;
}

function show(input, f, value) {
  if (f.type === "checkbox") input.checked = value === true;
  else input.value = value === null || value === undefined ? "" : String(value);
}

function render(recordId) {
  const rec = table.get(recordId);
  if (!rec || rec.deleted) {
    rows.get(recordId)?.tr.remove();
    rows.delete(recordId);
    return;
  }
  const r = row(recordId);
  r.tr.dataset.version = String(rec.version);
  const pending = new Set(client.outbox.pending().filter((e) => e.tableId === tableId && e.recordId === recordId)
    .flatMap((e) => e.changes.map((c) => c.fieldId)));
  for (const f of columns()) {
    const cell = r.cells.get(f.id);
    if (!cell) continue;
    const { td, input } = cell;
    td.classList.toggle("pending", pending.has(f.id));
    if (document.activeElement !== input) show(input, f, rec.fields[f.id]);
  }
}

function read(f, input) {
  if (f.type === "checkbox") return input.checked;
  if (f.type === "number") return input.value === "" ? null : Number(input.value);
  return input.value;
}

async function edit(recordId, f, input) {
  const value = read(f, input);
  const result = await table.set(recordId, { [f.id]: value });
  if (result.status !== "rejected") activity(`you set ${recordId}.${f.id} = ${fmt(value)} (${result.status})`);
}

// ---- what happens on the table ----------------------------------------------

table.on("record", ({ recordId }) => render(recordId));
table.on("ready", () => {
  paintHeader();
  for (const r of table.records()) render(r.recordId);
  document.body.dataset.ready = "1";
  // Only a user who may write every column seeds a fresh table.
  if (table.records().length === 0 && FIELDS.every((f) => table.canWrite(f.id))) void seed();
});
table.on("reload", ({ reason }) => activity(`reloading the table (${reason})`));
// Records entering or leaving the view (or the intern's rows): the grid
// follows through `record` events; the feed says why.
table.on("entered", ({ recordId }) => activity(`${recordId} came into ${VIEWS[table.viewId] ?? "your rows"}`));
table.on("left", ({ recordId }) => activity(`${recordId} left ${VIEWS[table.viewId] ?? "your rows"}`));
table.on("change", (e) => {
  for (const c of e.changes ?? []) activity(`${e.userId} set ${e.entityId}.${c.fieldId} = ${fmt(c.newValue)}`);
  if (e.type === "delete") activity(`${e.userId} deleted ${e.entityId}`);
});
table.on("conflict", ({ recordId, winner, theirs, yours }) => {
  for (const t of theirs) {
    const mine = yours.find((y) => y.fieldId === t.fieldId);
    // Equal values are no conflict (the server says so since v1.3; this
    // also keeps an older server's answer quiet).
    if (mine && fmt(mine.newValue ?? null) === fmt(t.value ?? null)) continue;
    const cell = rows.get(recordId)?.cells.get(t.fieldId);
    if (cell) {
      cell.td.classList.remove("flash");
      void cell.td.offsetWidth; // restart the animation
      cell.td.classList.add("flash");
      cell.td.dataset.conflict = winner;
    }
    toast([`Conflict on ${recordId}.${t.fieldId}: theirs `, [fmt(t.value)], " · yours ", [fmt(mine?.newValue)],
      winner === "theirs" ? " → theirs kept" : " → yours kept"]);
    activity(`conflict on ${recordId}.${t.fieldId}: ${winner} kept`);
  }
});
table.on("rollback", ({ edit, result }) => {
  if (result.error) toast([`Edit of ${edit.recordId} refused: `, [result.error.message]]);
});
client.on("history", ({ events }) => {
  for (const e of [...events].reverse()) for (const c of e.changes ?? []) activity(`${e.userId} set ${e.entityId}.${c.fieldId} = ${fmt(c.newValue)}`, true);
});

// A fresh table gets the launch plan, once. Panes of one browser take
// turns (a Web Lock), and each asks the server whether the table is still
// empty before seeding, so the second pane loads instead. Panes of two
// browsers may still race: each row is written as version 1 (`version: 0`),
// and the later write of the same values is merged, not a conflict.
async function seed() {
  const run = async () => {
    const page = await client.request("load_records", { tableId, limit: 1 });
    if ((page.records ?? []).length > 0) return;
    // "My tasks" first, so its followers see the rows enter it. Through the
    // HTTP API, open in development mode; with an API token the app's
    // backend stores it instead.
    await fetch(`/api/v1/sync/tables/${encodeURIComponent(tableId)}/views/my-tasks`, {
      method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ filter: MINE }),
    }).catch(() => undefined);
    await Promise.all(seedRows().map((r) => client.change(tableId, r.id,
      Object.entries(r.fields).map(([fieldId, newValue]) => ({ fieldId, newValue })), { version: 0 })));
  };
  if (navigator.locks) await navigator.locks.request(`rtsync-seed:${tableId}`, run);
  else await run();
}

// ---- presence ---------------------------------------------------------------

function paintPresence() {
  const users = client.users(tableId);
  // Names and ids come from other users: rendered as text, never as HTML.
  document.getElementById("users").replaceChildren(...users.map((u) => {
    const span = document.createElement("span");
    span.className = "user";
    span.dataset.user = u.userId;
    span.style.background = u.color;
    span.textContent = u.userName;
    return span;
  }));
  for (const r of rows.values()) {
    for (const { td } of r.cells.values()) {
      td.classList.remove("remote");
      delete td.dataset.cursorOf;
      td.querySelector(".tag")?.remove();
    }
  }
  for (const r of rows.values()) {
    for (const { td } of r.cells.values()) {
      delete td.dataset.editingOf;
      td.querySelector(".typing")?.remove();
    }
  }
  // Typing badges: who edits which cell, in their colour, with dots.
  for (const e of table.editing) {
    const cell = rows.get(e.recordId)?.cells.get(e.fieldId);
    if (!cell) continue;
    const name = users.find((u) => u.userId === e.userId)?.userName ?? e.userId;
    cell.td.dataset.editingOf = e.userId;
    const badge = document.createElement("span");
    badge.className = "typing";
    badge.style.setProperty("--c", e.color);
    badge.title = `${name} is editing`;
    badge.append(document.createElement("i"), document.createElement("i"), document.createElement("i"));
    cell.td.appendChild(badge);
  }
  for (const u of users) {
    if (u.userId === client.userId || !u.cursor) continue;
    const cell = rows.get(u.cursor.recordId)?.cells.get(u.cursor.fieldId);
    if (!cell) continue;
    cell.td.classList.add("remote");
    cell.td.style.setProperty("--c", u.color);
    cell.td.dataset.cursorOf = u.userId;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = u.userName;
    cell.td.appendChild(tag);
  }
}
for (const ev of ["users", "joined", "left", "cursor", "selection"]) client.on(ev, paintPresence);
table.on("editing", paintPresence);
client.on("joined", (u) => u.userId !== client.userId && activity(`${u.userName} joined`));
client.on("left", ({ userId }) => activity(`${userId} left`));

// ---- status, offline and the queue -------------------------------------------

client.on("status", ({ status }) => {
  const el = document.getElementById("status");
  el.textContent = status;
  el.className = status;
});
client.on("pending", ({ count }) => {
  const el = document.getElementById("queued");
  el.dataset.count = String(count);
  el.textContent = `${count} queued`;
});
document.getElementById("offline").addEventListener("change", (e) => client.setOffline(e.target.checked));

// ---- views: "All tasks" or "My tasks" -----------------------------------------

const viewSelect = document.getElementById("view");
for (const [id, label] of Object.entries(VIEWS)) viewSelect.add(new Option(label, id));
viewSelect.value = startView;
document.body.dataset.view = startView;
viewSelect.addEventListener("change", () => {
  const view = viewSelect.value;
  document.body.dataset.view = view;
  delete document.body.dataset.ready;
  table.setView(view).catch((err) => toast(["Could not switch the view: ", [err.message]]));
});
setInterval(() => client.heartbeat(tableId), 30_000);

// ---- helpers -----------------------------------------------------------------

function fmt(v) {
  return v === undefined ? "(none)" : JSON.stringify(v);
}

function activity(line, old = false) {
  const li = document.createElement("li");
  li.textContent = line;
  const list = document.getElementById("activity");
  if (old) list.append(li);
  else list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

/** A toast of text parts; a part in brackets (`[text]`) is shown bold. Never HTML. */
function toast(parts) {
  const div = document.createElement("div");
  div.className = "toast";
  for (const p of parts) {
    if (Array.isArray(p)) {
      const b = document.createElement("b");
      b.textContent = p[0];
      div.append(b);
    } else div.append(p);
  }
  document.getElementById("toasts").appendChild(div);
  setTimeout(() => div.remove(), 6000);
}

// ---- undo and redo: Ctrl+Z / Ctrl+Shift+Z (Cmd on a Mac) ------------------------

document.addEventListener("keydown", (e) => {
  if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
  // Text being typed into a cell (not saved yet): the browser's own undo.
  const [recordId, fieldId] = (e.target.dataset?.cell ?? "").split("|");
  if (fieldId && e.target.tagName === "INPUT" && e.target.type !== "checkbox"
    && e.target.value !== String(table.get(recordId)?.fields[fieldId] ?? "")) return;
  e.preventDefault();
  document.activeElement?.blur(); // a focused cell is not repainted
  const way = e.shiftKey ? "redo" : "undo";
  (e.shiftKey ? table.redo() : table.undo()).catch((err) => toast([`Could not ${way}: `, [err.message]]));
});
table.on("undo", ({ way, result }) => {
  if (result.status === "nothing") return toast([`Nothing to ${way}`]);
  activity(`you ${way === "undo" ? "undid" : "redid"} ${result.events?.length ?? 0} record(s) (${result.status})`);
  for (const s of result.skipped ?? []) {
    const what = s.fieldId ? `${s.recordId}.${s.fieldId}` : s.recordId;
    toast([`Not ${way === "undo" ? "undone" : "redone"}: `, [what], s.by ? ` was changed by ${s.by} since` : " was changed since",
      "theirValue" in s ? [` (${fmt(s.theirValue)})`] : ""]);
  }
});

// ---- a record's history: click its row header --------------------------------
// Read from the server (record_history), newest first, masked like
// everything else: "alice changed Status: Todo → Done, 2 min ago".

const fieldLabel = (fieldId) => FIELDS.find((f) => f.id === fieldId)?.label ?? fieldId;
const asText = (v) => (v === undefined || v === null || v === "" ? "(empty)" : typeof v === "string" ? v : JSON.stringify(v));

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function historyLine(e) {
  if (e.type === "create") return `${e.userId} created it, ${ago(e.timestamp)}`;
  if (e.type === "delete") return `${e.userId} deleted it, ${ago(e.timestamp)}`;
  const what = (e.changes ?? []).map((c) => `${fieldLabel(c.fieldId)}: ${asText(c.oldValue)} → ${asText(c.newValue)}`);
  const undo = e.metadata?.undoOf ? " (undo)" : e.metadata?.redoOf ? " (redo)" : "";
  return `${e.userId} changed ${what.join("; ")}${undo}, ${ago(e.timestamp)}`;
}

async function showHistory(recordId) {
  const panel = document.getElementById("history");
  panel.hidden = false;
  panel.dataset.record = recordId;
  panel.querySelector("h3 span").textContent = recordId;
  try {
    const page = await table.history(recordId, { limit: 50 });
    if (panel.dataset.record !== recordId) return; // another record was asked for since
    const items = page.events.map((e) => {
      const li = document.createElement("li");
      li.textContent = historyLine(e);
      return li;
    });
    panel.querySelector("ol").replaceChildren(...items);
  } catch (err) {
    toast(["Could not read the history: ", [err.message]]);
  }
}
document.getElementById("history-close").addEventListener("click", () => {
  const panel = document.getElementById("history");
  panel.hidden = true;
  delete panel.dataset.record;
});
// The open panel follows the record's later changes (anyone's, the user's own included).
const followHistory = (recordId) => {
  const panel = document.getElementById("history");
  if (!panel.hidden && panel.dataset.record === recordId) void showHistory(recordId);
};
table.on("change", (e) => followHistory(e.entityId));
client.outbox.on("settled", (s) => s.edit.tableId === tableId && followHistory(s.edit.recordId));
table.on("undo", ({ result }) => (result.events ?? []).forEach((e) => followHistory(e.recordId)));

client.connect().catch((e) => toast(["Not connected: ", [e.message]]));
