/**
 * What the client reads of a JWT without verifying it (the server does):
 * its subject, to name the default storage of queued edits per user.
 */
export function jwtSubject(token: string): string | undefined {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(part) : "";
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
