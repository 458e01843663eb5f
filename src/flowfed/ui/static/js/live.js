// The run events WebSocket, resumed after a drop from the last sequence number seen, so
// that no event is lost or applied twice (the server replays exactly what follows `after`).
import { token } from "./api.js";

export class RunStream {
  /**
   * @param {string} runId
   * @param {(events: object[]) => void} onBatch  events in id order, at most once each,
   *        delivered once per animation frame so that 1,000 busy tasks cost one render
   * @param {(status: string) => void} onStatus  "connecting" | "live" | "reconnecting" | "ended"
   */
  constructor(runId, onBatch, onStatus = () => {}) {
    this.runId = runId;
    this.onBatch = onBatch;
    this.onStatus = onStatus;
    this.lastId = 0;
    this.queue = [];
    this.frame = 0;
    this.closed = false;
    this.retry = 0;
    this.ws = null;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onStatus(this.retry ? "reconnecting" : "connecting");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/api/v1/runs/${encodeURIComponent(this.runId)}/events?after=${this.lastId}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: token.get() }));
      this.retry = 0;
      this.onStatus("live");
    };
    ws.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      this.receive(ev);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (e.code === 1000 || e.code === 4404 || e.code === 4403 || e.code === 4401) {
        this.flush();
        this.onStatus(e.code === 1000 ? "ended" : `closed (${e.code})`);
        return;
      }
      // Network drop or server restart: back off, then resume after lastId.
      this.retry += 1;
      this.onStatus("reconnecting");
      setTimeout(() => this.connect(), Math.min(5000, 250 * 2 ** Math.min(this.retry, 5)));
    };
  }

  /** Queue one event for the next frame, unless it was seen already. */
  receive(ev) {
    if (typeof ev.id !== "number" || ev.id <= this.lastId) return; // already applied
    this.lastId = ev.id;
    this.queue.push(ev);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (!this.queue.length) return;
    const batch = this.queue;
    this.queue = [];
    this.onBatch(batch);
  }

  /** Drop the connection without ending the stream (tests and flaky networks). */
  drop() { if (this.ws) this.ws.close(4000, "drop"); }

  close() {
    this.closed = true;
    if (this.frame) cancelAnimationFrame(this.frame);
    if (this.ws) this.ws.close(1000);
  }
}
