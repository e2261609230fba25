// The event stream: WebSocket /api/events with resume (docs/api.md "Event stream").
//
// The client keeps the highest event id it has processed and ignores any id at or below it,
// so an event replayed after a reconnect is never applied twice. On reconnect it passes that
// id as ?since= with the server run it came from (&server=, from hello); the server replays
// what it still holds. The very first connection passes no
// `since` (there is nothing to resume): the server says hello with resumed:false and the
// console loads GET /api/calls, whose calls carry the events already folded in.

const BACKOFF_MIN = 500;
const STREAM_ENDED = 4401; // the server closed the stream: its session or token has ended

/** Why the server ended a stream (its close reason), as the login form says it. */
export const ENDED_TEXT = {
  logged_out: '您已退出登录',
  session_expired: '会话长时间无操作已过期，请重新登录',
  session_ended: '会话已结束（已退出或密码已修改），请重新登录',
  token_revoked: 'API 令牌已吊销',
  account_disabled: '账户已停用，请联系管理员',
  account_changed: '账户权限已变更，请重新登录',
};
const BACKOFF_MAX = 5000;

export class EventStream {
  /**
   * handlers: onHello(msg), onEvent(msg), onStatus(connected: bool),
   * beforeReconnect() → Promise<bool> (false: do not reconnect, e.g. the session ended),
 * onEnded(reason): the server closed the stream because its session or token ended.
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.lastEventId = 0;
    this.server = ''; // the server run the ids belong to (hello.data.server)
    this.connected = false;
    this.ws = null;
    this.stopped = true;
    this.delay = BACKOFF_MIN;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Close for good (logout, session expired). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
    this.setConnected(false);
  }

  /** Forget the position (a new login: start from the current state, not from an old id). */
  reset() {
    this.lastEventId = 0;
    this.server = '';
    this.publish();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let query = '';
    if (this.lastEventId > 0) {
      query = `?since=${this.lastEventId}`;
      if (this.server) query += `&server=${encodeURIComponent(this.server)}`;
    }
    return `${proto}//${location.host}/api/events${query}`;
  }

  connect() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setConnected(false);
      if (e.code === STREAM_ENDED) {
        // the server ended the session or token this stream lived by: no reconnect
        this.stopped = true;
        if (this.handlers.onEnded) this.handlers.onEnded(e.reason || 'session_ended');
        return;
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => {}; // a close follows
  }

  async scheduleReconnect() {
    if (this.stopped) return;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, BACKOFF_MAX);
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      // a refused WebSocket handshake does not say why: ask the API whether the session is alive
      const go = this.handlers.beforeReconnect ? await this.handlers.beforeReconnect() : true;
      if (go && !this.stopped) this.connect();
    }, wait);
  }

  receive(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (err) {
      return; // not ours
    }
    if (!msg || typeof msg !== 'object') return;
    const id = Number(msg.id) || 0;
    if (msg.kind === 'hello') {
      this.delay = BACKOFF_MIN;
      this.setConnected(true);
      const resumed = Boolean(msg.data && msg.data.resumed);
      if (msg.data && msg.data.server) this.server = String(msg.data.server);
      // Not resumed: the ids before hello are folded into GET /api/calls, and a new server run
      // may have started its ids again from 1 — continue from the hello's id.
      if (!resumed) this.lastEventId = id;
      this.publish();
      this.handlers.onHello(msg, resumed);
      return;
    }
    if (id <= this.lastEventId) return; // already processed (a replay after reconnect)
    try {
      this.handlers.onEvent(msg);
    } catch (err) {
      console.error('event', msg.kind, err);
    }
    this.lastEventId = id;
    this.publish();
  }

  setConnected(value) {
    this.connected = value;
    this.publish();
    if (this.handlers.onStatus) this.handlers.onStatus(value);
  }

  /** Keep window.fenliu up to date for tests and diagnosis. */
  publish() {
    if (window.fenliu) {
      window.fenliu.lastEventId = this.lastEventId;
      window.fenliu.connected = this.connected;
    }
  }
}
