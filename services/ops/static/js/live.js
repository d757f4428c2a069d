// One order's live notifications: EventSource on the notification stream, opened with a
// single-use ticket (EventSource cannot send Authorization; the token never goes in a URL).
//
// Resume: every event's id is remembered; after a dropped connection a NEW ticket is taken
// and the stream reopened with last_event_id = the last id seen, so the server replays what
// was missed (no gap). Ids already shown are skipped (no duplicate), whatever the server sends.

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 8000;

export class LiveOrder {
  constructor({ session, notificationUrl, orderId, eventTypes, onEvent, onState }) {
    Object.assign(this, { session, notificationUrl, orderId, eventTypes, onEvent, onState });
    this.lastId = 0;
    this.seen = new Set();
    this.source = null;
    this.stopped = false;
    this.retryMs = RETRY_MIN_MS;
    this.timer = null;
  }

  start() { this.stopped = false; this.connect(); }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting");
    let ticket;
    try {
      ticket = await this.session.call(this.notificationUrl, "/v1/notifications/stream/tickets",
        { method: "POST", body: { order_id: this.orderId } });
    } catch (err) {
      this.onState(err.status === 401 ? "signed-out" : "offline");
      if (err.status !== 401) this.retry();
      return;
    }
    const url = new URL(this.notificationUrl + "/v1/notifications/stream");
    url.searchParams.set("ticket", ticket.ticket);
    url.searchParams.set("order_id", this.orderId);
    url.searchParams.set("last_event_id", String(this.lastId));
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => { this.retryMs = RETRY_MIN_MS; this.onState("live"); });
    for (const type of this.eventTypes) source.addEventListener(type, (e) => this.receive(e));
    source.addEventListener("stream.closed", () => this.reconnect());
    // The ticket is single-use: the browser's own reconnect (same URL) would be refused,
    // so every error closes this source and a fresh ticket opens the next one.
    source.addEventListener("error", () => this.reconnect());
  }

  receive(event) {
    const id = Number(event.lastEventId);
    if (!Number.isFinite(id) || this.seen.has(id)) return;
    this.seen.add(id);
    if (id > this.lastId) this.lastId = id;
    let note;
    try { note = JSON.parse(event.data); } catch { return; }
    this.onEvent(note);
  }

  reconnect() {
    if (this.source) this.source.close();
    this.source = null;
    if (this.stopped) return;
    this.onState("offline");
    this.retry();
  }

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }
}
