/**
 * One WebSocket at a time to a sidecar: it opens, authenticates, answers
 * requests by `rid`, hands every other frame to `onFrame`, and reconnects
 * with exponential backoff and full jitter until stopped.
 *
 * Each socket is a `Link` with its own pending requests, so a closing old
 * socket never fails a request of the new one. Authentication uses
 * `getToken()` at every connect; a refusal (close 4401 or `unauthenticated`)
 * asks for a fresh token once, and a second refusal stops the transport with
 * status `unauthorized`: it never loops. The backoff is reset only after a
 * connection stayed up for `stableAfterMs`.
 */
import { decode, encode } from "@msgpack/msgpack";

import { Emitter } from "./emitter.js";
import { RtsyncError } from "./errors.js";
import { Authenticated, CloseCode } from "./wire.js";

/** What the client needs of a WebSocket: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code: number; reason: string }) => unknown) | null;
  onerror: ((ev: unknown) => unknown) | null;
}

/**
 * A WebSocket class: `globalThis.WebSocket`, or the `ws` package's default
 * export, passed as is.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type WebSocketClass = new (url: string, protocols?: string | string[]) => any;

export type Status = "connecting" | "online" | "offline" | "unauthorized";

export interface StatusChange {
  status: Status;
  /** Why: `connect`, `authenticated`, `closed`, `offline`, `disconnect`, `refused`, ... */
  reason: string;
  /** The WebSocket close code and reason of the close that caused it. */
  closeCode?: number;
  closeReason?: string;
  /** For `unauthorized`: the refusal. */
  error?: RtsyncError;
}

export interface DevUser {
  userId: string;
  userName: string;
  avatarUrl?: string;
  /** Development mode only: grants to take instead of every table (docs/protocol.md 2.1). */
  tables?: { [tableId: string]: "r" | "rw" | { access: "r" | "rw"; fields?: { [fieldId: string]: "none" | "r" | "rw" } } };
}

export interface TransportOptions {
  url: string;
  token?: string;
  getToken?: () => string | Promise<string>;
  devUser?: DevUser;
  encoding: "msgpack" | "json";
  backoffBaseMs: number;
  backoffMaxMs: number;
  stableAfterMs: number;
  requestTimeoutMs: number;
  WebSocket?: WebSocketClass;
}

interface TransportEvents {
  status: StatusChange;
  /** Every frame that is not an answer to a request. */
  frame: { event: string; data: unknown };
  /** Authenticated on a new socket: subscriptions and the outbox resume. */
  open: Authenticated;
}

interface Pending {
  /** Called in the frame's own turn, before any later frame is handled. */
  onAck?: (v: unknown) => void;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Offered beside the encoding's subprotocol, it carries the token in the
 * upgrade request (a browser cannot set an `Authorization` header): the
 * sidecar verifies it before the socket could wait among unauthenticated
 * ones, and answers with `authenticated` at once.
 */
const TOKEN_PROTOCOL = "rtsync.token.";
/** Characters a subprotocol may hold (RFC 6455 4.1: an HTTP token). */
const PROTOCOL_SAFE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
/**
 * How long to wait for `authenticated` after the upgrade before sending
 * `authenticate` anyway (a sidecar older than the token subprotocol
 * ignores it). A sidecar that took the token has queued `authenticated`
 * before it reads any frame, so the fallback never doubles it.
 */
const UPGRADE_AUTH_WAIT_MS = 1000;

/** One socket and its requests. */
class Link {
  pending = new Map<number, Pending>();
  authenticated = false;
  /** The token went in the upgrade: wait for `authenticated`. */
  tokenAtUpgrade = false;
  constructor(public ws: WebSocketLike) {}

  fail(e: RtsyncError) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
  }
}

export class Transport extends Emitter<TransportEvents> {
  status: Status = "offline";
  userId?: string;
  private link?: Link;
  private rid = 1;
  private attempt = 0;
  private onlineSince = 0;
  private timer?: ReturnType<typeof setTimeout>;
  private running = false;
  private refusedOnce = false;

  constructor(private opts: TransportOptions) {
    super();
  }

  get online(): boolean {
    return this.status === "online";
  }

  /** Starts connecting (and reconnecting) until `stop`. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.refusedOnce = false;
    this.attempt = 0;
    this.open("connect");
  }

  /** Closes the socket and stops reconnecting. */
  stop(reason = "disconnect"): void {
    this.running = false;
    clearTimeout(this.timer);
    const link = this.link;
    this.link = undefined;
    if (link) {
      link.fail(new RtsyncError("disconnected", "the client disconnected"));
      detach(link.ws);
      try {
        link.ws.close(1000);
      } catch {
        /* already closed */
      }
    }
    this.setStatus({ status: "offline", reason });
  }

  /**
   * Sends a request and resolves with its ack (rejects with its error).
   * `onAck` sees the ack before any later frame is handled (a promise
   * continuation may run after them).
   */
  request<T = unknown>(event: string, data: unknown, onAck?: (ack: T) => void): Promise<T> {
    const link = this.link;
    if (!link || !link.authenticated) {
      return Promise.reject(new RtsyncError("disconnected", "not connected"));
    }
    return this.requestOn<T>(link, event, data, onAck);
  }

  /** Sends a frame without a `rid`; false when not connected. */
  send(event: string, data: unknown): boolean {
    const link = this.link;
    if (!link || !link.authenticated) return false;
    return this.write(link, [event, data]);
  }

  private requestOn<T>(link: Link, event: string, data: unknown, onAck?: (ack: T) => void): Promise<T> {
    const rid = this.rid++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        link.pending.delete(rid);
        reject(new RtsyncError("request_timeout", `${event}: no answer in ${this.opts.requestTimeoutMs} ms`));
      }, this.opts.requestTimeoutMs);
      link.pending.set(rid, {
        onAck: onAck as ((v: unknown) => void) | undefined,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
      });
      let sent = false;
      try {
        sent = this.write(link, [event, data, rid]);
      } catch (e) {
        clearTimeout(timer);
        link.pending.delete(rid);
        reject(new RtsyncError("bad_request", `${event} could not be encoded: ${String(e)}`));
        return;
      }
      if (!sent) {
        clearTimeout(timer);
        link.pending.delete(rid);
        reject(new RtsyncError("disconnected", "not connected"));
      }
    });
  }

  private write(link: Link, frame: unknown[]): boolean {
    if (link.ws.readyState !== 1) return false;
    link.ws.send(this.opts.encoding === "json" ? JSON.stringify(frame) : encode(frame));
    return true;
  }

  private setStatus(change: StatusChange) {
    if (this.status === change.status && change.status !== "unauthorized") return;
    this.status = change.status;
    this.emit("status", change);
  }

  private open(reason: string) {
    if (!this.running) return;
    if (this.opts.token || this.opts.getToken) {
      this.setStatus({ status: "connecting", reason });
      void this.openWithToken(reason);
      return;
    }
    this.openSocket(reason);
  }

  /** Gets the token first, so it can go in the upgrade request. */
  private async openWithToken(reason: string) {
    let token: string;
    try {
      token = String((await this.credentials() as { token: string }).token);
    } catch (e) {
      const error = new RtsyncError("unauthenticated", `getToken failed: ${String(e)}`);
      this.running = false;
      this.setStatus({ status: "unauthorized", reason: "refused", closeCode: CloseCode.Unauthenticated, closeReason: error.message, error });
      return;
    }
    if (!this.running || this.link) return;
    this.openSocket(reason, PROTOCOL_SAFE.test(token) ? token : undefined);
  }

  private openSocket(reason: string, upgradeToken?: string) {
    if (!this.running) return;
    const WS: WebSocketClass | undefined = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
    if (!WS) {
      this.running = false;
      const error = new RtsyncError("bad_request", "no WebSocket: pass one (e.g. the ws package) as options.WebSocket");
      this.setStatus({ status: "offline", reason: "no_websocket", error });
      return;
    }
    this.setStatus({ status: "connecting", reason });
    const protocol = this.opts.encoding === "json" ? "rtsync.v1.json" : "rtsync.v1.msgpack";
    const protocols = upgradeToken ? [protocol, TOKEN_PROTOCOL + upgradeToken] : protocol;
    let ws: WebSocketLike;
    try {
      ws = new WS(this.opts.url, protocols) as WebSocketLike;
    } catch (e) {
      this.retry({ code: 1006, reason: String(e) });
      return;
    }
    ws.binaryType = "arraybuffer";
    const link = new Link(ws);
    link.tokenAtUpgrade = upgradeToken !== undefined;
    this.link = link;
    ws.onopen = () => {
      if (!link.tokenAtUpgrade) {
        void this.authenticate(link);
        return;
      }
      setTimeout(() => {
        if (this.link === link && !link.authenticated) void this.authenticate(link);
      }, UPGRADE_AUTH_WAIT_MS);
    };
    ws.onmessage = (m) => this.onMessage(link, m.data);
    ws.onerror = () => undefined;
    ws.onclose = (ev) => this.onClose(link, ev?.code ?? 1006, ev?.reason ?? "");
  }

  private async authenticate(link: Link) {
    let auth: unknown;
    try {
      auth = await this.credentials();
    } catch (e) {
      this.refuse(link, new RtsyncError("unauthenticated", `getToken failed: ${String(e)}`));
      return;
    }
    if (this.link !== link) return;
    try {
      const ack = await this.requestOn<Authenticated>(link, "authenticate", auth);
      if (this.link !== link) return;
      this.authenticated(link, ack);
    } catch (e) {
      if (this.link !== link || link.authenticated) return;
      if (e instanceof RtsyncError && e.code === "unauthenticated") this.refuse(link, e);
      // Anything else (the socket closed, no answer): onClose retries.
      else closeQuietly(link.ws, 4000, "authenticate failed");
    }
  }

  private authenticated(link: Link, ack: Authenticated) {
    link.authenticated = true;
    this.userId = ack.userId;
    this.refusedOnce = false;
    this.onlineSince = Date.now();
    this.setStatus({ status: "online", reason: "authenticated" });
    this.emit("open", ack);
  }

  private async credentials(): Promise<unknown> {
    if (this.opts.getToken) return { token: await this.opts.getToken() };
    if (this.opts.token) return { token: this.opts.token };
    if (this.opts.devUser) return this.opts.devUser;
    throw new Error("no token, getToken or devUser in the options");
  }

  /**
   * The server refused our credentials: with `getToken` a fresh token gets
   * one more try; otherwise (or on the second refusal) the client stops.
   */
  private refuse(link: Link, error: RtsyncError) {
    if (this.link !== link) return;
    detach(link.ws);
    closeQuietly(link.ws, 1000, "unauthorized");
    link.fail(new RtsyncError("disconnected", "authentication refused"));
    this.link = undefined;
    if (this.opts.getToken && !this.refusedOnce) {
      this.refusedOnce = true;
      this.open("token_refresh");
      return;
    }
    this.running = false;
    clearTimeout(this.timer);
    this.setStatus({
      status: "unauthorized",
      reason: "refused",
      closeCode: error.closeCode ?? CloseCode.Unauthenticated,
      closeReason: error.closeReason ?? error.message,
      error,
    });
  }

  private onMessage(link: Link, raw: unknown) {
    if (this.link !== link) return;
    let frame: unknown;
    try {
      frame =
        typeof raw === "string"
          ? JSON.parse(raw)
          : decode(raw instanceof ArrayBuffer ? new Uint8Array(raw) : (raw as Uint8Array));
    } catch {
      return; // not a frame of ours
    }
    if (!Array.isArray(frame) || typeof frame[0] !== "string") return;
    const [event, data, rid] = frame as [string, unknown, number | undefined];
    if (event === "authenticated" && link.tokenAtUpgrade && !link.authenticated) {
      this.authenticated(link, data as Authenticated);
      return;
    }
    if (typeof rid === "number" && (event === "ack" || event === "error")) {
      const p = link.pending.get(rid);
      if (!p) return;
      link.pending.delete(rid);
      clearTimeout(p.timer);
      if (event === "ack") {
        try {
          p.onAck?.(data);
        } catch (e) {
          p.reject(e as Error);
          return;
        }
        p.resolve(data);
      } else {
        const body = (data ?? {}) as { code?: string; message?: string };
        p.reject(new RtsyncError(body.code ?? "internal", body.message ?? "error"));
      }
      return;
    }
    this.emit("frame", { event, data });
  }

  private onClose(link: Link, code: number, reason: string) {
    link.fail(new RtsyncError("disconnected", `connection closed (${code})`, code, reason));
    if (this.link !== link) return;
    this.link = undefined;
    if (code === CloseCode.Unauthenticated) {
      this.link = link; // refuse() checks it is the current link
      this.refuse(link, new RtsyncError("unauthenticated", reason || "unauthenticated", code, reason));
      return;
    }
    this.retry({ code, reason });
  }

  private retry(close: { code: number; reason: string }) {
    if (!this.running) {
      this.setStatus({ status: "offline", reason: "closed", closeCode: close.code, closeReason: close.reason });
      return;
    }
    // A connection that failed right after opening does not reset the backoff.
    if (this.onlineSince && Date.now() - this.onlineSince >= this.opts.stableAfterMs) this.attempt = 0;
    this.onlineSince = 0;
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    this.setStatus({ status: "connecting", reason: "closed", closeCode: close.code, closeReason: close.reason });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open("reconnect"), Math.random() * cap);
  }

  /** Closes the current socket as if the network dropped it (tests, demos). */
  dropConnection(): void {
    const link = this.link;
    if (link) closeQuietly(link.ws, 4000, "dropped by the client");
  }
}

function detach(ws: WebSocketLike) {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = () => undefined;
}

function closeQuietly(ws: WebSocketLike, code: number, reason: string) {
  try {
    ws.close(code, reason);
  } catch {
    /* already closed */
  }
}
