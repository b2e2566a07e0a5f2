/**
 * @rtsync/client: a live table that never loses an edit.
 *
 * - `client.ts`: the facade (`RtsyncClient`)
 * - `transport.ts`: the socket, authentication and reconnects
 * - `outbox.ts` / `storage.ts`: every edit until the server answered it
 * - `subscription.ts`: a table's events and recovery position
 * - `live-table.ts`: records, versions and pending edits for rendering
 * - `router.ts`: which part of the client a server frame is for, by its table
 * - `presence.ts`: who is on a table, with cursors and editing cells
 * - `editing.ts`: this user's editing indicator, renewed until stopped
 * - `wire.ts`: the protocol's types
 */
export { RtsyncClient } from "./client.js";
export type { ClientOptions, ChangeOptions, ClientEvents, FollowOptions } from "./client.js";
export { LiveTable, applyDelta } from "./live-table.js";
export type { LiveRecord, LiveTableEvents, LiveTableOptions, RecordCause } from "./live-table.js";
export { Outbox } from "./outbox.js";
export type { OutboxLink, OutboxOptions, OutboxState, NewEdit, Settled } from "./outbox.js";
export { MemoryStorage, IndexedDbStorage } from "./storage.js";
export type { OutboxStorage, QueuedEdit } from "./storage.js";
export { Subscription } from "./subscription.js";
export type { ViewMove } from "./subscription.js";
export { BaseFeeds } from "./base-feed.js";
export type { BaseFeedEvents } from "./base-feed.js";
export { Transport } from "./transport.js";
export type { Status, StatusChange, DevUser, WebSocketClass, WebSocketLike } from "./transport.js";
export { RtsyncError, isTransient } from "./errors.js";
export { Emitter } from "./emitter.js";
export { compareIds } from "./stream-id.js";
export { routeFrame, groupEvents } from "./router.js";
export { LatestWins } from "./latest-wins.js";
export { OwnEditing } from "./editing.js";
export type { EditingHandle, SendFrame } from "./editing.js";
export { Presence } from "./presence.js";
export type { EditingCell, PresenceEvent } from "./presence.js";
export { jwtSubject } from "./token.js";
export type { Route } from "./router.js";
export * from "./wire.js";
