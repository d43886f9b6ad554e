// Weft against the stock Yjs client: yjs + y-websocket (the browser packages) in Node, over `ws`.
//
// The server URL comes from WEFT_WS_URL (e.g. ws://127.0.0.1:PORT/ws); a room's URL is
// `${WEFT_WS_URL}/${room}`, built by WebsocketProvider itself. Each test uses a fresh room. Every
// wait is a bounded poll that fails with a message saying what it waited for and what it saw;
// the short random pauses in the concurrency test only interleave traffic, they assert nothing.
//
// Run by tests/tests/interop.rs (`cargo test -p weft-tests --test interop`), or by hand against
// a running server: `WEFT_WS_URL=ws://127.0.0.1:8080/ws npm test`.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const SERVER = process.env.WEFT_WS_URL
if (!SERVER) {
  throw new Error('WEFT_WS_URL is not set; expected e.g. ws://127.0.0.1:8080/ws')
}

/** Default deadline of a wait, generous for shared CI machines. */
const WAIT_MS = 15_000
/** How soon a departed peer's cursor must vanish from the others. */
const AWARENESS_GONE_MS = 5_000
/** Per-test deadline: a hang fails the test instead of stalling the run. */
const TEST_TIMEOUT_MS = 45_000

// y-websocket logs protocol trouble instead of throwing: `console.error('Unable to compute
// message')` for an unknown message type, `console.warn('Permission denied ...')` for an auth
// message. Record both so a test can assert the server said nothing the stock client rejects.
const clientLogs = []
for (const level of ['error', 'warn']) {
  const original = console[level].bind(console)
  console[level] = (...args) => {
    clientLogs.push(`console.${level}: ${args.map(String).join(' ')}`)
    original(...args)
  }
}

/** Every peer created, so the process can exit even when a test fails half-way. */
const allPeers = new Set()
after(() => {
  for (const p of allPeers) p.destroy()
})

/** A fresh room name per test, so tests never see each other's documents. */
const freshRoom = (label) => `interop-${label}-${randomUUID()}`

// Fail fast, with the reason, when the server is not there: otherwise every test would wait out
// its sync deadline while the provider keeps reconnecting.
before(async () => {
  const url = `${SERVER}/${freshRoom('preflight')}`
  const ws = new WebSocket(url)
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no WebSocket handshake with ${url} within 5 s`)), 5_000)
      ws.once('open', () => { clearTimeout(timer); resolve() })
      ws.once('error', (e) => { clearTimeout(timer); reject(new Error(`cannot open ${url}: ${e.message}`)) })
    })
  } finally {
    ws.terminate()
  }
})

/**
 * Polls `check` every 10 ms until it returns true; throws after `timeout` ms with `what` and,
 * when given, `detail()` describing the state seen last.
 */
async function waitFor (what, check, { timeout = WAIT_MS, detail } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (check()) return
    if (Date.now() >= deadline) {
      const seen = detail ? `; last seen: ${detail()}` : ''
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${seen}`)
    }
    await delay(10)
  }
}

/**
 * One stock client: a Y.Doc with a WebsocketProvider on `room`, exactly as a browser tab would
 * set it up (minus BroadcastChannel, which would let peers sync without the server).
 */
class Peer {
  constructor (t, room, name, { connect = true } = {}) {
    this.name = name
    this.doc = new Y.Doc()
    this.text = this.doc.getText('content')
    /** Close codes of connections the server (or network) ended; local closes are not listed. */
    this.remoteCloses = []
    this.provider = new WebsocketProvider(SERVER, room, this.doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      connect
    })
    this.provider.on('connection-close', (event) => {
      if (event) this.remoteCloses.push(event.code)
    })
    this.destroyed = false
    allPeers.add(this)
    t.after(() => this.destroy())
  }

  get awareness () { return this.provider.awareness }
  get clientID () { return this.doc.clientID }
  toString () { return this.text.toString() }

  async synced () {
    await waitFor(`${this.name} to reach synced`, () => this.provider.synced, {
      detail: () => `wsconnected=${this.provider.wsconnected} remote closes=${JSON.stringify(this.remoteCloses)}`
    })
  }

  destroy () {
    if (this.destroyed) return
    this.destroyed = true
    this.provider.destroy()
    this.doc.destroy()
    allPeers.delete(this)
  }
}

/** Connects `n` peers to `room` and waits until all are synced. */
async function peers (t, room, n, prefix = 'peer') {
  const ps = Array.from({ length: n }, (_, i) => new Peer(t, room, `${prefix}${i}`))
  await Promise.all(ps.map((p) => p.synced()))
  return ps
}

/** Waits until every peer's `content` equals `expected`. */
async function waitText (ps, expected, what) {
  await waitFor(what, () => ps.every((p) => p.toString() === expected), {
    detail: () => ps.map((p) => `${p.name}=${JSON.stringify(p.toString())}`).join(', ') +
      `; expected ${JSON.stringify(expected)}`
  })
}

/** State vector as a plain object, for deepEqual. */
const stateVector = (doc) => Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(doc)))

const randomInt = (n) => Math.floor(Math.random() * n)

test('four stock clients editing concurrently converge on identical text', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const logsBefore = clientLogs.length
  const room = freshRoom('converge')
  const N = 4
  const PER_PEER = 60
  const ps = await peers(t, room, N)

  // Fixed-width markers inserted only at marker boundaries (multiples of WIDTH): no insert ever
  // lands inside another marker, so every marker must survive intact in the merged text.
  const WIDTH = 7
  const marker = (p, i) => `[${p}:${String(i).padStart(3, '0')}]`
  assert.equal(marker(0, 0).length, WIDTH)
  const expected = []
  const next = new Array(N).fill(0)
  const insertOne = (p) => {
    const text = ps[p].text
    const m = marker(p, next[p]++)
    expected.push(m)
    text.insert(randomInt(text.length / WIDTH + 1) * WIDTH, m)
  }
  while (next.some((i) => i < PER_PEER)) {
    // Within one synchronous block no network I/O runs, so these edits are truly concurrent:
    // every peer edits its own view before seeing anyone else's latest edits.
    for (const p of [...ps.keys()].sort(() => Math.random() - 0.5)) {
      const burst = Math.min(1 + randomInt(4), PER_PEER - next[p])
      if (burst > 1 && Math.random() < 0.3) {
        // Several inserts in one transaction: one update message holding several items.
        ps[p].doc.transact(() => { for (let k = 0; k < burst; k++) insertOne(p) })
      } else {
        for (let k = 0; k < burst; k++) insertOne(p)
      }
    }
    // Let some (not all) traffic through before the next round.
    await delay(randomInt(4))
  }
  assert.equal(expected.length, N * PER_PEER)

  await waitFor(`all ${N} peers to converge on ${expected.length} markers`,
    () => ps.every((p) => p.text.length === expected.length * WIDTH) &&
      ps.every((p) => p.toString() === ps[0].toString()), {
      detail: () => ps.map((p) => {
        const s = p.toString()
        const missing = expected.filter((m) => !s.includes(m)).length
        return `${p.name}: length ${s.length}, ${missing} markers missing`
      }).join('; ')
    })

  const merged = ps[0].toString()
  const found = merged.match(/\[\d:\d{3}\]/g) ?? []
  assert.equal(found.join(''), merged, 'merged text is made only of whole markers')
  assert.deepEqual([...found].sort(), [...expected].sort(), 'every marker exactly once')

  // The server's own copy: a client that joins now gets the document from the server alone.
  const [late] = await peers(t, room, 1, 'late')
  await waitText([late], merged, 'a late joiner to receive the converged text')
  for (const p of ps) assert.deepEqual(stateVector(p.doc), stateVector(late.doc))

  for (const p of [...ps, late]) {
    assert.deepEqual(p.remoteCloses, [], `${p.name}: the server closed no connection`)
  }
  assert.deepEqual(clientLogs.slice(logsBefore), [], 'the stock client logged no protocol errors')
})

test('awareness: states reach the others and vanish when a peer leaves or its socket drops', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const logsBefore = clientLogs.length
  const room = freshRoom('awareness')
  const [a, b] = await peers(t, room, 2, 'aw')
  const stateIn = (observer, subject) => observer.awareness.getStates().get(subject.clientID)
  const states = (p) => JSON.stringify(Object.fromEntries(p.awareness.getStates()))

  const userA = { name: 'Ada', color: '#30bced', colorLight: '#30bced33' }
  a.awareness.setLocalState({ user: userA, cursor: { anchor: 0, head: 0 } })
  await waitFor('B to see A\'s user and cursor', () => stateIn(b, a)?.user?.name === 'Ada', {
    detail: () => states(b)
  })
  assert.deepEqual(stateIn(b, a), { user: userA, cursor: { anchor: 0, head: 0 } })

  // A moving its cursor is an update of an existing state (a newer clock).
  a.awareness.setLocalStateField('cursor', { anchor: 2, head: 5 })
  await waitFor('B to see A\'s moved cursor', () => stateIn(b, a)?.cursor?.head === 5, {
    detail: () => states(b)
  })

  const userB = { name: 'Bob', color: '#ee6352', colorLight: '#ee635233' }
  b.awareness.setLocalStateField('user', userB)
  await waitFor('A to see B\'s user', () => stateIn(a, b)?.user?.name === 'Bob', {
    detail: () => states(a)
  })

  // A newcomer learns the states already present from the server on connect.
  const [c] = await peers(t, room, 1, 'aw-late')
  await waitFor('a late joiner to see A and B', () =>
    stateIn(c, a)?.user?.name === 'Ada' && stateIn(c, b)?.user?.name === 'Bob', {
    detail: () => states(c)
  })

  // Clean leave: destroy() sends A's null state, then closes the socket.
  a.destroy()
  await waitFor('A\'s state to vanish from B and C after A\'s provider is destroyed',
    () => stateIn(b, a) === undefined && stateIn(c, a) === undefined, {
      timeout: AWARENESS_GONE_MS,
      detail: () => `B: ${states(b)}; C: ${states(c)}`
    })

  // Abrupt drop: D's socket goes away without a close frame or a null state, as when a laptop
  // lid closes. Only the server can tell the others (JS peers time states out after 30 s).
  const [d] = await peers(t, room, 1, 'aw-drop')
  d.awareness.setLocalStateField('user', { name: 'Dee', color: '#6eeb83', colorLight: '#6eeb8333' })
  await waitFor('B and C to see D', () =>
    stateIn(b, d)?.user?.name === 'Dee' && stateIn(c, d)?.user?.name === 'Dee', {
    detail: () => `B: ${states(b)}; C: ${states(c)}`
  })
  d.provider.shouldConnect = false // no reconnect: D stays gone
  const socket = d.provider.ws
  assert.ok(socket && typeof socket.terminate === 'function', 'D has a ws socket to terminate')
  socket.terminate()
  await waitFor('D\'s state to vanish from B and C after D\'s socket is dropped',
    () => stateIn(b, d) === undefined && stateIn(c, d) === undefined, {
      timeout: AWARENESS_GONE_MS,
      detail: () => `B: ${states(b)}; C: ${states(c)}`
    })
  assert.equal(d.provider.wsconnected, false, 'D did not reconnect')

  // The survivors still see each other.
  assert.equal(stateIn(c, b)?.user?.name, 'Bob')
  assert.deepEqual(clientLogs.slice(logsBefore), [], 'the stock client logged no protocol errors')
})

test('late joiners receive the full text, while others are connected and after all left', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = freshRoom('late')
  const [a, b] = await peers(t, room, 2, 'early')
  // Many small edits with deletes, so the state is many items and a delete set, not one string.
  let expected = ''
  for (let i = 0; i < 400; i++) {
    const pos = randomInt(expected.length + 1)
    const word = `w${i} `
    a.text.insert(pos, word)
    expected = expected.slice(0, pos) + word + expected.slice(pos)
    if (i % 5 === 4) {
      const at = randomInt(expected.length - 2)
      a.text.delete(at, 2)
      expected = expected.slice(0, at) + expected.slice(at + 2)
    }
  }
  // One large paste (~64 KiB) too.
  const paste = 'lorem ipsum dolor sit amet '.repeat(2500)
  a.text.insert(expected.length, paste)
  expected += paste
  assert.equal(a.toString(), expected)
  // B seeing everything means the server has it.
  await waitText([b], expected, 'B to receive A\'s edits')

  const [c] = await peers(t, room, 1, 'late-while-open')
  await waitText([c], expected, 'a late joiner (others still connected) to receive the full text')

  for (const p of [a, b, c]) p.destroy()
  const [d] = await peers(t, room, 1, 'late-after-all-left')
  await waitText([d], expected, 'a late joiner (after everyone left) to receive the full text')
  assert.deepEqual(d.remoteCloses, [])
})

test('unicode text with deletes matches between clients across disconnect and reconnect', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = freshRoom('unicode')
  const [a, b] = await peers(t, room, 2, 'uni')

  // Positions are JS string indices, i.e. UTF-16 code units, which is what Yjs counts.
  a.text.insert(0, 'Hello, wörld! 👋🏽 ')
  await waitText([a, b], 'Hello, wörld! 👋🏽 ', 'B to receive A\'s greeting')
  b.text.insert(b.text.length, '日本語 🎉 e\u0301 👨‍👩‍👧‍👦 שלום 𝔘𝔫𝔦𝔠𝔬𝔡𝔢')
  await waitFor('A to receive B\'s line', () => a.toString().endsWith('𝔘𝔫𝔦𝔠𝔬𝔡𝔢'), {
    detail: () => JSON.stringify(a.toString())
  })
  const at = a.toString().indexOf('wörld')
  a.doc.transact(() => {
    a.text.delete(at, 'wörld'.length)
    a.text.insert(at, 'Welt 🌍')
  })
  const phase1 = 'Hello, Welt 🌍! 👋🏽 日本語 🎉 e\u0301 👨‍👩‍👧‍👦 שלום 𝔘𝔫𝔦𝔠𝔬𝔡𝔢'
  await waitText([a, b], phase1, 'both to agree after a replace inside unicode text')

  // B goes offline; both edit disjoint places; B comes back.
  b.provider.disconnect()
  assert.equal(b.provider.wsconnected, false)
  const cjk = a.toString().indexOf('日本語 ')
  a.text.delete(cjk, '日本語 '.length)
  a.text.insert(a.text.length, ' — añadido 🚀')
  b.text.insert(0, '🧪 ')
  const party = b.toString().indexOf('🎉 ')
  b.text.delete(party, '🎉 '.length)
  const phase2 = '🧪 Hello, Welt 🌍! 👋🏽 e\u0301 👨‍👩‍👧‍👦 שלום 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — añadido 🚀'
  b.provider.connect()
  await b.synced()
  await waitText([a, b], phase2, 'A and B to merge their offline edits after B reconnects')

  // A reconnects too, then a fresh client reads the server's copy.
  a.provider.disconnect()
  a.provider.connect()
  await a.synced()
  const [c] = await peers(t, room, 1, 'uni-late')
  await waitText([a, b, c], phase2, 'all three to agree after A reconnects')
  assert.deepEqual(stateVector(a.doc), stateVector(c.doc))
  assert.deepEqual(stateVector(b.doc), stateVector(c.doc))
  // The server's copy, as the late joiner received it, decodes on its own to the same text.
  const probe = new Y.Doc()
  Y.applyUpdate(probe, Y.encodeStateAsUpdate(c.doc))
  assert.equal(probe.getText('content').toString(), phase2)
  probe.destroy()
  for (const p of [a, b, c]) assert.deepEqual(p.remoteCloses, [], `${p.name}: the server closed no connection`)
})
