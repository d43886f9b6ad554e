// One document's connection to the server: the stock y-websocket provider plus what Weft adds on
// top of it — the JSON control channel (tag 100), a save tracker, typing hints and a readable
// connection status. The editor page renders `conn.state` whenever `onChange` fires.
//
// Facts this relies on (see shared/PROTOCOL.md and y-websocket 3.1.0 `src/y-websocket.js`):
// - `provider.messageHandlers` is a per-provider copy of the handler table, indexed by the first
//   varUint of a message; registering index 100 keeps stock clients' "Unable to compute message"
//   away, and wrapping index 0 lets us see sync traffic without changing it.
// - The server sends control messages only after the client's `hello`, so we send one on every
//   (re)connect, before the provider's sync step 1.
// - The server broadcasts every update it accepted back to its sender too, with the same bytes,
//   and (in strict durability) only after it is on disk; a `saved` control message follows the
//   batch's flush.

import { WebsocketProvider } from 'y-websocket'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

import { awarenessUser } from './identity.js'

const MESSAGE_SYNC = 0
const SYNC_STEP1 = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2
/** Close code of a deleted document (`CloseCode::Deleted` in shared/src/close.rs). */
const CLOSE_DELETED = 4410
/** Weft's control channel: varUint(100), then a varString holding one JSON object. */
const MESSAGE_CONTROL = 100

/**
 * Longest wait between reconnect attempts. y-websocket's backoff is min(100 ms × 2^n, this);
 * its default of 2.5 s is kept, so a restarted server is back in everyone's tab within seconds.
 */
const MAX_BACKOFF_MS = 2500

/** While the user types, `typing: true` is repeated this often so peers can expire stale hints. */
const TYPING_REPEAT_MS = 3000
/** After this long without a keystroke we tell peers typing stopped. */
const TYPING_IDLE_MS = 2500
/** A peer's hint disappears this long after its last `typing: true` (a lost `false` heals). */
const TYPING_EXPIRE_MS = 6000

/**
 * In relaxed durability the server sends no `saved` message. After our updates came back we wait
 * this long for one before calling the state "synced" instead of "saved".
 */
const SAVED_GRACE_MS = 4000

/**
 * What a close code means for the person looking at the page, or null when it needs no words
 * (1000/1005/1006: a normal close or a dropped network, covered by "reconnecting").
 * @param {number} code
 * @param {string} reason
 */
export const describeClose = (code, reason) => {
  const why = reason ? `: ${reason}` : '.'
  if (code === 1001) return 'The server is restarting.'
  if (code === 1007) return `The server could not read a message from this tab${why}`
  if (code === 1008) return `The server refused this connection${why}`
  if (code === 1009) return 'An edit was too large for the server.'
  if (code === 1011) return `The server ran into a problem${why}`
  if (code === CLOSE_DELETED) return 'This document was deleted.'
  if (code === 1013) {
    return reason && /slow/i.test(reason)
      ? 'This connection could not keep up with the document.'
      : `The document is busy right now${why}`
  }
  if (code >= 4400 && code < 4500) return `The server refused access to this document${why}`
  if (code >= 4000 && code < 5000) return `The document is temporarily unavailable${why}`
  return null
}

/**
 * Close codes after which retrying cannot help: 1008 (policy, e.g. a bad token) and 4400–4499
 * (y-websocket's convention for "do not reconnect").
 * @param {{code: number}} event
 */
const isPermanent = (event) => event.code === 1008 || (event.code >= 4400 && event.code < 4500)

/** Byte-exact key for an update, so an echo can be matched to what we sent. */
const latin1 = new TextDecoder('latin1')
const keyOf = (bytes) => `${bytes.length}:${latin1.decode(bytes)}`

/**
 * Whether an update carries anything. The server neither stores nor echoes an empty one (no
 * structs, no deletions: the two zero bytes Yjs writes), so we must not wait for its echo.
 */
const isEmptyUpdate = (u) => u.length <= 2 && u.every((b) => b === 0)

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.docId the document id (room name), not yet URL-encoded
   * @param {import('yjs').Doc} o.ydoc
   * @param {{name: string, color: string}} o.identity
   * @param {string | null} o.token passed through as `?token=` for servers that check it
   * @param {() => void} o.onChange called after any field of `state` changed
   * @param {(level: string, text: string) => void} o.onNotice a message for the user
   * @param {boolean} [o.connect] connect at once (default); false waits for `start()`
   * @param {unknown} [o.localCopy] the origin of updates loaded from this device's copy of the
   *   document: not edits of this tab, so they are not counted as typing or unsent
   */
  constructor ({ docId, ydoc, identity, token, onChange, onNotice, onTitle, connect = true, localCopy = null }) {
    this.ydoc = ydoc
    this.identity = identity
    this.onChange = onChange
    this.onNotice = onNotice
    this.localCopyOrigin = localCopy
    /** Not connecting until `start()`: the page is still checking the document exists. */
    this.held = !connect
    /** Called with the document's new title when it is renamed (a `title` control message). */
    this.onTitle = onTitle ?? (() => {})
    this.state = {
      /** @type {'connecting' | 'connected' | 'offline'} */
      status: 'connecting',
      /** The provider received the server's sync step 2 on this connection. */
      synced: false,
      everSynced: false,
      /** When the next reconnect attempt starts (ms since the epoch), while waiting for it. */
      retryAt: /** @type {number | null} */ (null),
      /** Why the last connection ended, in words, when a close code said something. */
      lastClose: /** @type {string | null} */ (null),
      /** When the synced connection was lost (ms since the epoch); null while synced. */
      lostAt: /** @type {number | null} */ (null),
      /**
       * Connection attempts in a row that ended before the document synced. A refused upgrade
       * (a missing or expired token, the connection limit) looks to a page exactly like a
       * server that is down: the browser reports only close code 1006.
       */
      failedAttempts: 0,
      /** Set when the server refused us for good; we stopped reconnecting. */
      refused: /** @type {string | null} */ (null),
      /**
       * The server does not have this document any more (closed with 4410, or 404 before we
       * connected): it is never reconnected or re-uploaded, and never shown as saved.
       */
      deleted: false,
      /** This device keeps a copy of the document (IndexedDB): edits survive a reload. */
      localCopy: false,
      online: navigator.onLine,
      /** From `welcome`: what this connection may do. */
      role: /** @type {'read' | 'write' | null} */ (null),
      /** Connections in the room, from the control channel. */
      connections: 0,
      /** `local`: shown from this device's copy, not synced with the server yet. */
      /** @type {'loading' | 'local' | 'saved' | 'saving' | 'unsaved' | 'synced' | 'deleted'} */
      save: 'loading',
      /** Latest `saved.version` seen. */
      savedVersion: /** @type {number | null} */ (null),
      /** connection id → { user, until } for peers typing now. */
      typing: new Map()
    }

    // Save tracking: our updates the server has not echoed yet, keyed by their bytes.
    this.pending = new Map()
    /** Local edits no open socket carried; the next sync step 2 will. */
    this.unsent = false
    /** When our last pending update came back; cleared by the `saved` that follows it. */
    this.echoedAt = /** @type {number | null} */ (null)

    this.savedGraceTimer = 0
    /** Whether the current socket got as far as the document sync. */
    this.syncedOnSocket = false
    this.typingSentAt = 0
    this.typingIdleTimer = 0

    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
    this.provider = new WebsocketProvider(`${proto}//${location.host}/ws`, encodeURIComponent(docId), ydoc, {
      // Each tab talks to the server only. With BroadcastChannel, tabs of one browser would sync
      // among themselves, so a tab could look live while its socket is down, and the "saved"
      // state would be a guess.
      disableBc: true,
      params: token ? { token } : {},
      maxBackoffTime: MAX_BACKOFF_MS,
      connect,
      shouldReconnect: (event) => !isPermanent(event)
    })
    this.awareness = this.provider.awareness
    this.awareness.setLocalStateField('user', awarenessUser(identity))
    this.installHandlers()
    this.listen()
  }

  installHandlers () {
    const p = this.provider
    p.messageHandlers[MESSAGE_CONTROL] = (_encoder, decoder, _provider, fromSocket) => {
      const text = decoding.readVarString(decoder)
      if (!fromSocket) return
      let msg
      try {
        msg = JSON.parse(text)
      } catch {
        console.warn('weft: ignoring a control message that is not JSON')
        return
      }
      if (msg && typeof msg === 'object') this.handleControl(msg)
    }
    const sync = p.messageHandlers[MESSAGE_SYNC]
    p.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, provider, fromSocket, type) => {
      const peek = decoding.clone(decoder)
      const syncType = decoding.readVarUint(peek)
      const incoming = syncType === SYNC_STEP2 || syncType === SYNC_UPDATE ? decoding.readVarUint8Array(peek) : null
      sync(encoder, decoder, provider, fromSocket, type)
      if (!fromSocket) return
      if (incoming) this.received(incoming)
      if (syncType === SYNC_STEP1) {
        // The provider answered the server's step 1 with a step 2 in `encoder` and sends it
        // right after we return: it carries everything the server lacks, offline edits included.
        const out = decoding.createDecoder(encoding.toUint8Array(encoder))
        decoding.readVarUint(out)
        if (decoding.readVarUint(out) === SYNC_STEP2) this.sent(decoding.readVarUint8Array(out))
        this.unsent = false
        this.updateSave()
      }
    }
  }

  listen () {
    const p = this.provider
    const s = this.state
    p.on('status', ({ status }) => {
      if (status === 'connected') {
        s.status = 'connected'
        s.retryAt = null
        s.refused = null
        // What the last socket did not confirm may be lost with it; the step 2 we send when the
        // server's step 1 arrives carries it again.
        if (this.pending.size > 0) this.unsent = true
        this.pending.clear()
        this.sendHello()
        this.reannounce()
      } else if (status === 'connecting') {
        s.status = 'connecting'
        s.retryAt = null
      } else {
        s.status = 'connecting'
        s.role = null
        s.typing.clear()
        s.lostAt ??= Date.now()
      }
      this.updateSave()
      this.onChange()
    })
    p.on('sync', (synced) => {
      s.synced = synced
      if (synced) {
        // Only a synced connection counts as back: a server that accepts the socket and closes
        // it at once (a full room, 1013) must not make the page look healthy in between.
        s.everSynced = true
        s.lastClose = null
        s.lostAt = null
        s.failedAttempts = 0
        this.syncedOnSocket = true
      }
      this.updateSave()
      this.onChange()
    })
    p.on('connection-close', (event) => {
      // Keep the most telling reason: the failed attempts that follow a 1001 say only 1006.
      const why = event ? describeClose(event.code, event.reason) : null
      if (why) s.lastClose = why
      if (event && !this.syncedOnSocket) s.failedAttempts += 1
      this.syncedOnSocket = false
      this.updateSave()
      // y-websocket counts the failure and schedules the retry right after this event.
      setTimeout(() => {
        if (!p.shouldConnect || p.ws) return
        const delay = Math.min(2 ** p.wsUnsuccessfulReconnects * 100, p.maxBackoffTime)
        s.retryAt = Date.now() + delay
        this.onChange()
      }, 0)
      this.onChange()
    })
    p.on('closed', ({ code, reason }) => {
      if (code === CLOSE_DELETED) {
        this.markDeleted()
        return
      }
      s.refused = describeClose(code, reason) ?? `The server closed the connection (code ${code}).`
      s.status = 'offline'
      s.retryAt = null
      this.onChange()
    })
    this.ydoc.on('update', (update, origin) => {
      if (origin === p || (origin !== null && origin === this.localCopyOrigin)) return
      this.localEdit(update)
    })
    window.addEventListener('online', () => {
      s.online = true
      this.retryNow()
      this.onChange()
    })
    window.addEventListener('offline', () => {
      s.online = false
      this.onChange()
    })
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && s.status !== 'connected' && !s.refused) this.retryNow()
    })
    // Leaving the page: tell the others at once (our awareness state becomes null) and close the
    // socket. Chromium keeps a page with an open WebSocket alive in the back/forward cache, and
    // the server would go on counting a tab nobody looks at. Restored from that cache, the page
    // connects again and resyncs.
    window.addEventListener('pagehide', () => {
      this.awareness.setLocalState(null)
      this.provider.disconnect()
    })
    window.addEventListener('pageshow', (e) => {
      if (!e.persisted) return
      this.awareness.setLocalStateField('user', awarenessUser(this.identity))
      this.retryNow()
    })
  }

  /**
   * Announces our awareness state again, one clock higher. y-websocket re-sends it on connect
   * with the clock it had, which the others hold our removal at (from when the socket closed)
   * and would ignore until the 15 s renewal; a newer clock shows us at once, whatever server.
   */
  reannounce () {
    const state = this.awareness.getLocalState()
    if (state !== null) this.awareness.setLocalState({ ...state })
  }

  /** Connects, for a connection made with `connect: false`. */
  start () {
    this.held = false
    if (!this.state.deleted) this.provider.connect()
  }

  /**
   * The server could not be asked (down, or no network) before connecting: shown like a failed
   * connection attempt, with the next try `delayMs` from now.
   */
  noteUnreachable (delayMs) {
    const s = this.state
    s.failedAttempts += 1
    s.lostAt ??= Date.now()
    s.retryAt = Date.now() + delayMs
    this.updateSave()
    this.onChange()
  }

  /** The document no longer exists on the server: stop for good and say so. */
  markDeleted () {
    const s = this.state
    s.deleted = true
    s.refused = null
    s.status = 'offline'
    s.retryAt = null
    s.role = null
    if (this.provider.shouldConnect) this.provider.disconnect()
    this.updateSave()
    this.onChange()
  }

  /** Starts a connection attempt now instead of waiting for the backoff timer. */
  retryNow () {
    const p = this.provider
    if (this.state.deleted || this.held) return
    if (p.ws === null) {
      this.state.refused = null
      p.connect()
    }
  }

  /** Sends one control message; false when no socket is open. */
  sendControl (msg) {
    const ws = this.provider.ws
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.provider.wsconnected) return false
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, MESSAGE_CONTROL)
    encoding.writeVarString(enc, JSON.stringify(msg))
    ws.send(encoding.toUint8Array(enc))
    return true
  }

  sendHello () {
    this.sendControl({ type: 'hello', user: { name: this.identity.name, color: this.identity.color } })
  }

  /** The user changed their name or colour: update awareness and the server's view of us. */
  setIdentity (identity) {
    this.identity = identity
    this.awareness.setLocalStateField('user', awarenessUser(identity))
    this.sendHello()
  }

  handleControl (msg) {
    const s = this.state
    switch (msg.type) {
      case 'welcome':
        s.role = msg.role === 'read' ? 'read' : 'write'
        s.connections = Number(msg.users) || 0
        break
      case 'joined':
        s.connections = Number(msg.users) || s.connections
        break
      case 'left':
        s.connections = Number(msg.users) || 0
        s.typing.delete(msg.connection)
        break
      case 'typing':
        if (typeof msg.connection !== 'string') return
        if (msg.active) {
          s.typing.set(msg.connection, { user: msg.user ?? null, until: Date.now() + TYPING_EXPIRE_MS })
        } else {
          s.typing.delete(msg.connection)
        }
        break
      case 'saved':
        s.savedVersion = Number(msg.version)
        if (this.pending.size === 0 && !this.unsent) this.echoedAt = null
        this.updateSave()
        break
      case 'notice':
        this.onNotice(msg.level === 'error' || msg.level === 'warning' ? msg.level : 'info', String(msg.text ?? ''))
        return
      case 'title':
        this.onTitle(String(msg.title ?? ''))
        return
      case 'error':
        if (msg.code === 'read_only') s.role = 'read'
        this.onNotice('error', String(msg.message ?? msg.code ?? 'The server reported an error.'))
        break
      default:
        // A message type from a newer server: ignored, as the schema says.
        return
    }
    this.onChange()
  }

  /** A local edit: the provider has just sent it, if a socket was open. */
  localEdit (update) {
    const ws = this.provider.ws
    if (this.provider.wsconnected && ws && ws.readyState === WebSocket.OPEN) {
      this.sent(update)
    } else {
      this.unsent = true
    }
    this.noteTyping()
    this.updateSave()
    this.onChange()
  }

  sent (update) {
    if (isEmptyUpdate(update)) return
    const k = keyOf(update)
    this.pending.set(k, (this.pending.get(k) ?? 0) + 1)
  }

  received (update) {
    if (this.pending.size === 0) return
    const k = keyOf(update)
    const n = this.pending.get(k)
    if (n === undefined) return
    if (n > 1) this.pending.set(k, n - 1)
    else this.pending.delete(k)
    if (this.pending.size === 0) {
      this.echoedAt = Date.now()
      clearTimeout(this.savedGraceTimer)
      this.savedGraceTimer = setTimeout(() => {
        this.updateSave()
        this.onChange()
      }, SAVED_GRACE_MS)
    }
    this.updateSave()
    this.onChange()
  }

  updateSave () {
    const s = this.state
    // Nothing can be saved to a document that no longer exists, whatever was sent before.
    if (s.deleted) s.save = 'deleted'
    else if (this.unsent) s.save = 'unsaved'
    else if (this.pending.size > 0) s.save = 'saving'
    else if (!s.everSynced) s.save = s.localCopy && s.failedAttempts > 0 ? 'local' : 'loading'
    // Everything came back; `saved` confirms it is on disk. A server in relaxed durability
    // sends none, so after a grace period we say "synced" rather than wait forever.
    else if (this.echoedAt !== null) s.save = Date.now() - this.echoedAt >= SAVED_GRACE_MS ? 'synced' : 'saving'
    else s.save = 'saved'
  }

  noteTyping () {
    const now = Date.now()
    if (now - this.typingSentAt >= TYPING_REPEAT_MS) {
      if (this.sendControl({ type: 'typing', active: true })) this.typingSentAt = now
    }
    clearTimeout(this.typingIdleTimer)
    this.typingIdleTimer = setTimeout(() => {
      if (this.typingSentAt !== 0) this.sendControl({ type: 'typing', active: false })
      this.typingSentAt = 0
    }, TYPING_IDLE_MS)
  }

  /** Names of the peers typing now (expired hints are dropped). */
  typingNames () {
    const now = Date.now()
    const names = []
    for (const [id, t] of this.state.typing) {
      if (t.until < now) this.state.typing.delete(id)
      else names.push(t.user?.name || 'Someone')
    }
    return names
  }

  /** Whether leaving now could lose edits: some are not confirmed by the server yet. */
  hasUnsavedEdits () {
    return this.unsent || this.pending.size > 0
  }
}
