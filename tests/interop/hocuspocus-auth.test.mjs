// Weft with access control against the real Hocuspocus providers (3.4.4 and 4.x): the provider's
// `token` option carries a Weft token for the document; the server answers Authenticated
// (`read-write` or `readonly`) or PermissionDenied with the token error's code.
//
// Environment (set by tests/tests/interop.rs, which starts a server with an auth secret):
// WEFT_WS_URL, WEFT_HOCUS_URL, WEFT_AUTH_ROOM (the document the tokens are for), and
// WEFT_TOKEN_WRITE / WEFT_TOKEN_READ (tokens for it), WEFT_TOKEN_OTHER (a write token for another
// document). Every wait is a bounded poll.

import { test, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as delay } from 'node:timers/promises'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as V4 from '@hocuspocus/provider'
import * as V3 from 'hocuspocus-provider-v3'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set; run this file through tests/tests/interop.rs`)
  return value
}
const WS = env('WEFT_WS_URL')
const HOCUS = env('WEFT_HOCUS_URL')
const ROOM = env('WEFT_AUTH_ROOM')
const WRITE = env('WEFT_TOKEN_WRITE')
const READ = env('WEFT_TOKEN_READ')
const OTHER = env('WEFT_TOKEN_OTHER')

const WAIT_MS = 15_000
const TEST_TIMEOUT_MS = 60_000
const VERSIONS = [['3.4.4', V3], ['4.x', V4]]

// Each test's providers and sockets go when it ends: a socket left open would reconnect through
// a later test's server restart and could be torn down mid-handshake.
const cleanups = []
afterEach(() => {
  for (const c of cleanups.splice(0)) {
    try { c() } catch {}
  }
})

async function waitFor (what, check, detail) {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    if (check()) return
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}${detail ? `; last seen: ${detail()}` : ''}`)
    }
    await delay(20)
  }
}

/** A provider of module `P` on its own socket, recording what the server said about its token. */
function hocus (P, name, token) {
  const doc = new Y.Doc()
  const ws = new P.HocuspocusProviderWebsocket({ url: HOCUS, WebSocketPolyfill: WebSocket })
  const provider = new P.HocuspocusProvider({ websocketProvider: ws, name, document: doc, token })
  const seen = { scope: null, denied: [] }
  provider.on('authenticated', ({ scope }) => { seen.scope = scope })
  provider.on('authenticationFailed', ({ reason }) => seen.denied.push(reason))
  provider.attach()
  cleanups.push(() => { provider.destroy(); ws.destroy(); doc.destroy() })
  return { doc, provider, seen, text: doc.getText('content') }
}

/** A stock y-websocket peer with a token in its URL parameters. */
function ywebsocket (token) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(WS, ROOM, doc, { WebSocketPolyfill: WebSocket, disableBc: true, params: { token } })
  cleanups.push(() => { provider.destroy(); doc.destroy() })
  return { doc, provider, text: doc.getText('content'), synced: () => waitFor('y-websocket sync', () => provider.synced) }
}

/** lib0 varString. */
const varString = (s) => {
  const bytes = new TextEncoder().encode(s)
  const len = []
  let n = bytes.length
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  return [...len, ...bytes]
}

for (const [version, P] of VERSIONS) {
  test(`${version}: a read-write token edits; a readonly token reads, and its edits are neither seen nor saved`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const writer = hocus(P, ROOM, WRITE)
    await waitFor('the writer to be authenticated and synced', () => writer.seen.scope && writer.provider.synced)
    assert.equal(writer.seen.scope, 'read-write')
    const mark = `[${version} writer]`
    writer.text.insert(writer.text.length, mark)
    await waitFor('the writer\'s edit to be saved', () => writer.provider.unsyncedChanges === 0)

    const reader = hocus(P, ROOM, READ)
    await waitFor('the reader to be authenticated and synced', () => reader.seen.scope && reader.provider.synced)
    assert.equal(reader.seen.scope, 'readonly')
    await waitFor('the reader to receive the text', () => reader.text.toString().includes(mark))
    reader.text.insert(0, 'READONLY EDIT ')

    // Proof the reader's edit had its chance: a later edit of the writer reaches the reader.
    const later = `[${version} later]`
    writer.text.insert(writer.text.length, later)
    await waitFor('the reader to receive the later edit', () => reader.text.toString().includes(later))
    await delay(200)
    assert.ok(!writer.text.toString().includes('READONLY EDIT'), 'the writer never sees the readonly edit')
    const stock = ywebsocket(READ)
    await stock.synced()
    assert.ok(stock.text.toString().includes(later), 'a fresh client gets the saved text')
    assert.ok(!stock.text.toString().includes('READONLY EDIT'), 'the readonly edit was not saved')
    assert.ok(reader.provider.unsyncedChanges > 0, 'the refused edit is never acknowledged as saved')
  })

  test(`${version}: a token for another document is denied`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const denied = hocus(P, ROOM, OTHER)
    await waitFor('authenticationFailed', () => denied.seen.denied.length > 0)
    assert.equal(denied.seen.denied[0], 'token_wrong_document')
    assert.equal(denied.seen.scope, null)
    assert.equal(denied.text.toString(), '', 'nothing of the document reached it')
  })
}

// A socket that has no other document is closed after the refusal: 4403 for a token that does
// not cover the document, 4401 for a missing or invalid one.
test('a socket whose only document is refused is closed with 4403 / 4401', { timeout: TEST_TIMEOUT_MS }, async () => {
  const closeOf = (token) => new Promise((resolve, reject) => {
    const ws = new WebSocket(HOCUS)
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('no close within the wait')) }, WAIT_MS)
    const messages = []
    ws.on('open', () => ws.send(Uint8Array.from([...varString(ROOM), 2, 0, ...varString(token), ...varString('4.8.0')])))
    ws.on('message', (data) => messages.push(Buffer.from(data)))
    ws.on('close', (code, reason) => { clearTimeout(timer); resolve({ code, reason: reason.toString(), messages }) })
    ws.on('error', () => {})
  })
  const wrong = await closeOf(OTHER)
  assert.equal(wrong.code, 4403)
  assert.equal(wrong.reason, 'token_wrong_document')
  // PermissionDenied (auth subtype 1) for the document came first.
  assert.deepEqual([...wrong.messages[0]], [...varString(ROOM), 2, 1, ...varString('token_wrong_document')])
  const garbage = await closeOf('not-a-token')
  assert.equal(garbage.code, 4401)
  assert.equal(garbage.reason, 'token_malformed')
})
