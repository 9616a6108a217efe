// Client telemetry to POST /api/v1/events, as the apps send it: a "view" when a video comes
// on screen, then "watch" (with watch_ms) or "skip" when it leaves. Batched (up to 50, or
// every few seconds) and flushed with keepalive when the page is hidden or closed.

const FLUSH_MS = 3000;
const MAX_BATCH = 50;
const SKIP_MS = 2000; // left within two seconds: a skip
const MAX_LOOPS = 5; // the server refuses watch_ms above five times the duration

export class EventQueue {
  constructor(api) {
    this.api = api;
    this.pending = [];
    this.timer = null;
    this.sent = 0;
    const flushNow = () => this.flush(true);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") flushNow();
    });
    window.addEventListener("pagehide", flushNow);
  }

  push(event) {
    this.pending.push({ ...event, occurred_at: new Date().toISOString() });
    if (this.pending.length >= MAX_BATCH) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  view(item) {
    this.push({ action: "view", video_id: item.video_id, position: item.position ?? undefined,
      request_id: item.request_id ?? undefined });
  }

  /** The video left the screen after ``ms`` of playback. */
  left(item, ms) {
    const cap = item.duration ? Math.floor(item.duration * 1000 * MAX_LOOPS) : ms;
    this.push({ action: ms < SKIP_MS ? "skip" : "watch", video_id: item.video_id,
      watch_ms: Math.min(ms, cap), position: item.position ?? undefined,
      request_id: item.request_id ?? undefined });
  }

  async flush(keepalive = false) {
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.pending.length || !this.api.hasSession) return;
    const batch = this.pending.splice(0, MAX_BATCH);
    try {
      await this.api.post("/events", { events: batch }, { keepalive });
      this.sent += batch.length;
      document.body.dataset.eventsSent = String(this.sent);
    } catch (e) {
      // A 422 names what the server refused; those events would never be accepted.
      if (e.status !== 422 && e.status !== 401) this.pending.unshift(...batch);
      console.warn("events not sent:", e.message);
    }
    if (this.pending.length && !this.timer) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }
}
