// Weft against the real Hocuspocus providers: `@hocuspocus/provider` 3.4.4 (installed as
// `hocuspocus-provider-v3`) and 4.x, next to yjs + y-websocket, in Node over `ws`.
//
// Environment (set by tests/tests/interop.rs, which starts an open server): WEFT_WS_URL
// (ws://127.0.0.1:PORT/ws, for y-websocket), WEFT_HOCUS_URL (ws://127.0.0.1:PORT/hocuspocus),
// WEFT_API_URL (http://127.0.0.1:PORT) and WEFT_RESTART_DIR: the test writes `restart` there and
// the Rust side restarts the server on the same port and data directory, then writes
// `restarted`. Each test uses fresh documents; every wait is a bounded poll that says what it
// waited for and what it saw.

import { test, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
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
const API = env('WEFT_API_URL')
const RESTART_DIR = env('WEFT_RESTART_DIR')

const WAIT_MS = 15_000
/** A restart, the providers' reconnect backoff and their resync. */
const RESTART_WAIT_MS = 40_000
const TEST_TIMEOUT_MS = 60_000
const VERSIONS = [['3.4.4', V3], ['4.x', V4]]

// Providers log protocol trouble instead of throwing (`Can't apply message of unknown type`):
// record errors so a test can assert the server sent nothing they reject.
const clientErrors = []
const originalError = console.error.bind(console)
console.error = (...args) => {
  clientErrors.push(args.map(String).join(' '))
  originalError(...args)
}

// Each test's providers and sockets go when it ends: a socket left open would reconnect through
// a later test's server restart and could be torn down mid-handshake.
const cleanups = []
afterEach(() => {
  for (const c of cleanups.splice(0)) {
    try { c() } catch {}
  }
})

async function waitFor (what, check, detail, ms = WAIT_MS) {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${detail ? `; last seen: ${await detail()}` : ''}`)
    }
    await delay(20)
  }
}

const fresh = (label) => `hocus-${label}-${randomUUID()}`

/** A socket shared by providers of module `P` (`HocuspocusProviderWebsocket`). */
function socket (P) {
  const ws = new P.HocuspocusProviderWebsocket({ url: HOCUS, WebSocketPolyfill: WebSocket })
  cleanups.push(() => ws.destroy())
  return ws
}

/** A provider of module `P` for document `name` on `ws` (a fresh socket when absent). */
function hocus (P, name, { ws = socket(P), token = 'open-mode' } = {}) {
  const doc = new Y.Doc()
  const provider = new P.HocuspocusProvider({ websocketProvider: ws, name, document: doc, token })
  provider.attach()
  const seen = { synced: 0, stateless: [] }
  provider.on('synced', () => { seen.synced++ })
  provider.on('stateless', ({ payload }) => seen.stateless.push(payload))
  cleanups.push(() => { provider.destroy(); doc.destroy() })
  const text = doc.getText('content')
  return {
    doc,
    provider,
    text,
    seen,
    synced: () => waitFor(`${name} to sync`, () => provider.synced && seen.synced > 0),
    saved: () => waitFor('unsyncedChanges to return to 0', () => provider.unsyncedChanges === 0,
      () => provider.unsyncedChanges)
  }
}

/** A stock y-websocket peer on room `name`. */
function ywebsocket (name) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(WS, name, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  cleanups.push(() => { provider.destroy(); doc.destroy() })
  const text = doc.getText('content')
  return { doc, provider, text, synced: () => waitFor(`${name} to sync (y-websocket)`, () => provider.synced) }
}

async function apiText (name) {
  const res = await fetch(`${API}/api/docs/${encodeURIComponent(name)}/text`)
  return res.ok ? res.text() : `HTTP ${res.status}`
}

const users = (awareness) => [...awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean)

test('Hocuspocus 3.4.4, 4.x and y-websocket clients editing one document converge with every insert', { timeout: TEST_TIMEOUT_MS }, async () => {
  const name = fresh('converge')
  const peers = [hocus(V3, name), hocus(V4, name), ywebsocket(name), hocus(V4, name)]
  await Promise.all(peers.map((p) => p.synced()))
  const inserts = []
  await Promise.all(peers.map(async (p, i) => {
    for (let n = 0; n < 15; n++) {
      const word = `[p${i}-${n}]`
      inserts.push(word)
      // At either end, so no insert lands inside another word and each stays whole.
      p.text.insert(Math.random() < 0.5 ? 0 : p.text.length, word)
      await delay(Math.random() * 15)
    }
  }))
  const all = () => peers.map((p) => p.text.toString())
  await waitFor('every peer to hold the same text with every insert', () => {
    const texts = all()
    return texts.every((t) => t === texts[0]) && inserts.every((w) => texts[0].includes(w))
  }, () => JSON.stringify(all()))
  await Promise.all(peers.filter((p) => p.saved).map((p) => p.saved()))
  assert.equal(await apiText(name), peers[0].text.toString(), 'the server holds the converged text')
  assert.deepEqual(clientErrors, [], 'no provider rejected a message')
})

for (const [version, P] of VERSIONS) {
  test(`${version}: awareness crosses between Hocuspocus and y-websocket`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const name = fresh(`awareness-${version}`)
    const h = hocus(P, name)
    const y = ywebsocket(name)
    await Promise.all([h.synced(), y.synced()])
    h.provider.setAwarenessField('user', { name: `Hocus ${version}` })
    y.provider.awareness.setLocalStateField('user', { name: 'Stock' })
    await waitFor('y-websocket to see the Hocuspocus user', () => users(y.provider.awareness).includes(`Hocus ${version}`),
      () => JSON.stringify(users(y.provider.awareness)))
    await waitFor('Hocuspocus to see the y-websocket user', () => users(h.provider.awareness).includes('Stock'),
      () => JSON.stringify(users(h.provider.awareness)))
    // A departed Hocuspocus user's cursor goes: the server removes what its member announced.
    h.provider.destroy()
    await waitFor('the Hocuspocus user to vanish', () => !users(y.provider.awareness).includes(`Hocus ${version}`),
      () => JSON.stringify(users(y.provider.awareness)))
  })

  test(`${version}: two documents multiplexed over one HocuspocusProviderWebsocket`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const [a, b] = [fresh(`mux-a-${version}`), fresh(`mux-b-${version}`)]
    const ws = socket(P)
    const ha = hocus(P, a, { ws })
    const hb = hocus(P, b, { ws })
    const ya = ywebsocket(a)
    const yb = ywebsocket(b)
    await Promise.all([ha.synced(), hb.synced(), ya.synced(), yb.synced()])
    ha.text.insert(0, 'alpha')
    hb.text.insert(0, 'beta')
    ya.text.insert(ya.text.length, ' from stock a')
    yb.text.insert(yb.text.length, ' from stock b')
    await waitFor('document a to converge', () => ha.text.toString() === ya.text.toString() &&
      ha.text.toString().includes('alpha') && ha.text.toString().includes('from stock a'),
    () => `${ha.text} | ${ya.text}`)
    await waitFor('document b to converge', () => hb.text.toString() === yb.text.toString() &&
      hb.text.toString().includes('beta') && hb.text.toString().includes('from stock b'),
    () => `${hb.text} | ${yb.text}`)
    assert.ok(!ha.text.toString().includes('beta') && !hb.text.toString().includes('alpha'), 'the documents stay apart')
    await Promise.all([ha.saved(), hb.saved()])
    assert.equal(await apiText(a), ya.text.toString())
    assert.equal(await apiText(b), yb.text.toString())
  })

  test(`${version}: synced fires and unsyncedChanges returns to 0 once edits are saved`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const name = fresh(`saved-${version}`)
    const h = hocus(P, name)
    await h.synced()
    await h.saved()
    for (let n = 0; n < 20; n++) h.text.insert(h.text.length, `${n},`)
    assert.ok(h.provider.unsyncedChanges > 0, 'edits are counted until the server acknowledges them')
    await h.saved()
    // Acknowledged means durable: the server's copy already has every edit.
    const expected = Array.from({ length: 20 }, (_, n) => `${n},`).join('')
    assert.equal(await apiText(name), expected)
  })

  test(`${version}: an API notice arrives as a stateless message; stateless is relayed to Hocuspocus members`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const name = fresh(`notice-${version}`)
    const h = hocus(P, name)
    const other = hocus(V4, name)
    await Promise.all([h.synced(), other.synced()])
    // Notices go to documents that exist.
    h.text.insert(0, 'notice board')
    await h.saved()
    const res = await fetch(`${API}/api/docs/${encodeURIComponent(name)}/notices`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ level: 'info', text: 'Deploy at 5pm' })
    })
    assert.equal(res.status, 200, await res.clone().text())
    assert.ok((await res.json()).delivered >= 2, 'both Hocuspocus members count as delivered')
    await waitFor('the notice as a stateless message', () => h.seen.stateless.length > 0, () => JSON.stringify(h.seen.stateless))
    assert.deepEqual(JSON.parse(h.seen.stateless[0]), { type: 'notice', level: 'info', text: 'Deploy at 5pm' })
    h.provider.sendStateless(JSON.stringify({ typing: true, from: version }))
    await waitFor('the other member to receive the stateless message',
      () => other.seen.stateless.some((s) => s.includes(`"from":"${version}"`)), () => JSON.stringify(other.seen.stateless))
    await delay(200)
    assert.ok(!h.seen.stateless.some((s) => s.includes('typing')), 'the sender does not get its own message back')
  })
}

test('4.x: session-aware providers of one document share a socket (documentName\\0sessionId)', { timeout: TEST_TIMEOUT_MS }, async () => {
  const name = fresh('sessions')
  const ws = socket(V4)
  const session = (label) => {
    const doc = new Y.Doc()
    const provider = new V4.HocuspocusProvider({ websocketProvider: ws, name, document: doc, token: 'open-mode', sessionAwareness: true })
    provider.attach()
    cleanups.push(() => { provider.destroy(); doc.destroy() })
    provider.setAwarenessField('user', { name: label })
    return { provider, text: doc.getText('content') }
  }
  const [one, two] = [session('one'), session('two')]
  assert.notEqual(one.provider.effectiveName, two.provider.effectiveName)
  await waitFor('both sessions to sync', () => one.provider.synced && two.provider.synced)
  one.text.insert(0, 'first ')
  two.text.insert(two.text.length, 'second')
  await waitFor('both sessions to converge', () => one.text.toString() === two.text.toString() &&
    one.text.toString().includes('first') && one.text.toString().includes('second'),
  () => `${one.text} | ${two.text}`)
  await waitFor('each session to see the other', () => users(one.provider.awareness).includes('two') &&
    users(two.provider.awareness).includes('one'))
  await waitFor('both sessions saved', () => one.provider.unsyncedChanges === 0 && two.provider.unsyncedChanges === 0)
  assert.equal(await apiText(name), one.text.toString())
})

test('both providers reconnect after a server restart and keep the text', { timeout: 2 * RESTART_WAIT_MS }, async () => {
  const name = fresh('restart')
  const peers = VERSIONS.map(([, P]) => hocus(P, name))
  await Promise.all(peers.map((p) => p.synced()))
  peers[0].text.insert(0, 'kept ')
  peers[1].text.insert(peers[1].text.length, 'across ')
  await waitFor('both edits on both peers', () => peers.every((p) => p.text.toString().includes('kept') &&
    p.text.toString().includes('across')), () => peers.map((p) => p.text.toString()).join(' | '))
  await Promise.all(peers.map((p) => p.saved()))
  const before = peers[0].text.toString()

  writeFileSync(join(RESTART_DIR, 'restart'), name)
  await waitFor('the server to restart', () => existsSync(join(RESTART_DIR, 'restarted')), undefined, RESTART_WAIT_MS)
  await waitFor('both providers to resync after the restart', () => peers.every((p) => p.provider.synced && p.provider.isAuthenticated),
    () => peers.map((p) => `${p.provider.synced}/${p.provider.isAuthenticated}`).join(' '), RESTART_WAIT_MS)
  peers[1].text.insert(peers[1].text.length, 'the restart')
  await Promise.all(peers.map((p) => p.saved()))
  const expected = `${before}the restart`
  await waitFor('the text after the restart', () => peers.every((p) => p.text.toString() === expected),
    () => peers.map((p) => p.text.toString()).join(' | '))
  const y = ywebsocket(name)
  await y.synced()
  assert.equal(y.text.toString(), expected, 'a fresh client gets the text saved before and after the restart')
})
