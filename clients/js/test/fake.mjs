// A fake connection for unit tests: every request waits until the test
// answers it, so a test decides each outcome and sees what was sent, in order.
import { RtsyncError } from "../dist/index.js";

export class FakeLink {
  online = true;
  sent = [];
  waiting = [];
  request(event, data) {
    return new Promise((resolve, reject) => {
      const req = { event, data, resolve, reject };
      this.sent.push(req);
      this.waiting.push(req);
    });
  }
  /** The next unanswered request (waits for it). */
  async next() {
    for (let i = 0; i < 200 && this.waiting.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const req = this.waiting.shift();
    if (!req) throw new Error("no request was sent");
    return req;
  }
  async idle(ms = 30) {
    await new Promise((r) => setTimeout(r, ms));
    return this.waiting.length === 0;
  }
  static error(code) {
    return new RtsyncError(code, code);
  }
}

/** The answer a server gives to a committed change. */
export function applied(edit, version, status = "applied") {
  return { status, eventId: `${1000 + version}-0`, version, clientChangeId: edit.clientChangeId };
}
