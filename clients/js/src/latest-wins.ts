/**
 * A rate limit where the latest value wins: at most `perSecond` sends a
 * second, and a value pushed while waiting replaces the one waiting (a
 * cursor's older positions are worth nothing once it moved on).
 */
export class LatestWins<T> {
  private timer?: ReturnType<typeof setTimeout>;
  private lastAt = 0;
  private pending?: T;

  constructor(private perSecond: number, private send: (value: T) => void) {}

  push(value: T): void {
    this.pending = value;
    const wait = 1000 / this.perSecond - (Date.now() - this.lastAt);
    if (wait <= 0) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.timer = undefined;
    if (this.pending === undefined) return;
    this.lastAt = Date.now();
    const value = this.pending;
    this.pending = undefined;
    this.send(value);
  }
}
