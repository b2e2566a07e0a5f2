/**
 * Errors the client reports, and which of them are worth retrying.
 * Server error codes are docs/protocol.md section 5's; the client adds
 * `disconnected` (the connection closed before the answer) and
 * `request_timeout` (no answer within `requestTimeoutMs`).
 */

export class RtsyncError extends Error {
  constructor(
    /** A protocol error code, or `disconnected` / `request_timeout`. */
    public readonly code: string,
    message: string,
    /** The WebSocket close code and reason, when a close caused it. */
    public readonly closeCode?: number,
    public readonly closeReason?: string,
  ) {
    super(message);
    this.name = "RtsyncError";
  }
}

/**
 * Failures after which the same request (with the same `clientChangeId`)
 * may succeed: the transport, Redis unreachable (`unavailable`), an outcome
 * unknown (`timeout`), and `rate_limited`. Everything else is the server's
 * final word on that request.
 */
export function isTransient(e: unknown): boolean {
  if (!(e instanceof RtsyncError)) return false;
  return TRANSIENT.has(e.code);
}

const TRANSIENT = new Set(["disconnected", "request_timeout", "unavailable", "timeout", "rate_limited"]);
