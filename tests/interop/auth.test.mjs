// Weft with access control against the stock Yjs client: yjs + y-websocket in Node, over `ws`,
// passing the token the way a browser does, as a URL parameter (`params: { token }`).
//
// Environment (set by tests/tests/interop.rs, which starts a server with an auth secret):
// WEFT_WS_URL (ws://127.0.0.1:PORT/ws), WEFT_AUTH_ROOM (the room the tokens are for), and
// WEFT_TOKEN_WRITE / WEFT_TOKEN_READ (tokens for that room). Every wait is a bounded poll.

import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as delay } from 'node:timers/promises'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set; run this file through tests/tests/interop.rs`)
  return value
}
const SERVER = env('WEFT_WS_URL')
const ROOM = env('WEFT_AUTH_ROOM')
const WRITE = env('WEFT_TOKEN_WRITE')
const READ = env('WEFT_TOKEN_READ')

const WAIT_MS = 15_000
const TEST_TIMEOUT_MS = 45_000

// y-websocket reports an auth permission-denied message with console.warn; record it.
const warnings = []
const originalWarn = console.warn.bind(console)
console.warn = (...args) => {
  warnings.push(args.map(String).join(' '))
  originalWarn(...args)
}

// Destroying the doc too stops its awareness timer, which would keep the process alive.
const providers = new Set()
after(() => {
  for (const p of providers) {
    p.destroy()
    p.doc.destroy()
  }
})

async function waitFor (what, check, detail) {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    if (check()) return
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}${detail ? `; last seen: ${detail()}` : ''}`)
    }
    await delay(10)
  }
}

/** A stock provider on the token's room, with the token in its URL parameters. */
function peer (token) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(SERVER, ROOM, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    params: { token }
  })
  providers.add(provider)
  const text = doc.getText('content')
  return { doc, provider, text, synced: () => waitFor('sync', () => provider.synced) }
}

/**
 * How a handshake to `url` ends: `{ status }` when it is refused with an HTTP status,
 * `{ code, reason }` when the socket is accepted and closed at once, `{ admitted: true }` when the
 * server answers sync step 1.
 */
function handshake (url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no answer from ${url}`)) }, WAIT_MS)
    const done = (result) => { clearTimeout(timer); resolve(result) }
    // With this listener set, `ws` leaves closing the refused request to us.
    ws.once('unexpected-response', (req, res) => { req.destroy(); done({ status: res.statusCode }) })
    // Sync step 1 with an empty state vector: only an admitted socket is answered.
    ws.once('open', () => ws.send(Uint8Array.of(0, 0, 1, 0)))
    ws.once('message', () => { done({ admitted: true }); ws.terminate() })
    ws.once('close', (code, reason) => done({ code, reason: reason.toString() }))
    ws.once('error', () => {})
  })
}

test('a writer and a read-only viewer with tokens in their URL params', { timeout: TEST_TIMEOUT_MS }, async () => {
  const writer = peer(WRITE)
  await writer.synced()
  writer.text.insert(0, 'written by the writer')
  const reader = peer(READ)
  await reader.synced()
  await waitFor('the reader to receive the text', () => reader.text.toString() === 'written by the writer',
    () => reader.text.toString())

  // The viewer shows its cursor: awareness still flows from a read-only connection.
  reader.provider.awareness.setLocalStateField('user', { name: 'Viewer' })
  await waitFor('the writer to see the viewer', () =>
    [...writer.provider.awareness.getStates().values()].some((s) => s.user?.name === 'Viewer'))

  // Its edit is refused, and it is told through the stock auth message.
  reader.text.insert(0, 'VIEWER EDIT ')
  await waitFor('the permission-denied warning', () => warnings.some((w) => w.includes('Permission denied')),
    () => JSON.stringify(warnings))
  writer.text.insert(writer.text.length, ' and more')
  await waitFor('the reader to receive the later edit', () => reader.text.toString().endsWith(' and more'))
  assert.equal(writer.text.toString(), 'written by the writer and more', 'the writer never sees the viewer edit')

  // A fresh client gets the server's copy: the viewer's edit is not in it.
  const fresh = peer(READ)
  await fresh.synced()
  assert.equal(fresh.text.toString(), 'written by the writer and more')
})

// Refused for its token, a socket is accepted and closed with 4401/4403 and the error code:
// y-websocket 3 stops reconnecting on 4400-4499, where it retries an HTTP refusal for ever.
test('handshakes without a valid token for the room are closed with 4401/4403', { timeout: TEST_TIMEOUT_MS }, async () => {
  assert.deepEqual(await handshake(`${SERVER}/${ROOM}`), { code: 4401, reason: 'token_missing' }, 'no token')
  assert.equal((await handshake(`${SERVER}/${ROOM}?token=${WRITE}x`)).code, 4401, 'altered token')
  assert.deepEqual(await handshake(`${SERVER}/another-room?token=${WRITE}`),
    { code: 4403, reason: 'token_wrong_document' }, 'token for another room')
  assert.deepEqual(await handshake(`${SERVER}/${ROOM}?token=${READ}`), { admitted: true }, 'valid token')
})

test('a stock provider refused for its token stops reconnecting', { timeout: TEST_TIMEOUT_MS }, async () => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(SERVER, ROOM, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  providers.add(provider)
  const closes = []
  let closed = null
  provider.on('connection-close', (event) => closes.push(event?.code))
  provider.on('closed', (event) => { closed = event })
  await waitFor('the provider to give up', () => closed !== null, () => JSON.stringify(closes))
  assert.deepEqual(closed, { code: 4401, reason: 'token_missing' })
  // Well past its first retry delays (100, 200, 400 ms): no further attempt.
  await delay(1500)
  assert.deepEqual(closes, [4401], 'one attempt only')
  assert.equal(provider.shouldConnect, false)
})
