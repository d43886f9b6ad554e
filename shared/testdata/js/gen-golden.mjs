// Generates shared/testdata/golden.json: wire frames produced by the real JavaScript encoders
// (y-protocols sync.js / awareness.js / auth.js, lib0 encoding, yjs documents), each with the
// messages weft-protocol must decode from it.
//
//   cd shared/testdata/js && npm ci && node gen-golden.mjs > ../golden.json
//
// Output is deterministic: every Y.Doc gets a fixed clientID and nothing depends on time.
//
// Vector shapes (see shared/tests/golden.rs):
//   { name, kind: "frame",    hex, expect: [message, ...] }
//   { name, kind: "var_uint", hex, expect: <number> }
// where message is one of
//   { kind: "sync_step1" | "sync_step2" | "update", payload: <hex> }
//   { kind: "awareness", entries: [{ client_id, clock, state: <JSON text> }, ...] }
//   { kind: "permission_denied", reason }
//   { kind: "query_awareness" }
//   { kind: "control", json: <JSON text> }

import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as authProtocol from 'y-protocols/auth'
import * as encoding from 'lib0/encoding'

// y-websocket's top-level message tags (y-websocket/src/y-websocket.js).
const messageSync = 0
const messageAwareness = 1
const messageAuth = 2
const messageQueryAwareness = 3
// Weft's control channel (weft-protocol MESSAGE_CONTROL).
const messageControl = 100

const hex = (u8) => Buffer.from(u8).toString('hex')

/** A Y.Doc with a fixed client id, so every run yields the same bytes. */
const newDoc = (clientID) => {
  const doc = new Y.Doc()
  doc.clientID = clientID
  return doc
}

const vectors = []
const frame = (name, bytes, expect) => vectors.push({ name, kind: 'frame', hex: hex(bytes), expect })

// --- Writers: exactly what y-websocket does to put one message in an encoder. ---

const writeStep1 = (encoder, doc) => {
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeSyncStep1(encoder, doc)
}
const writeStep2 = (encoder, doc, sv) => {
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeSyncStep2(encoder, doc, sv)
}
const writeUpdate = (encoder, update) => {
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeUpdate(encoder, update)
}
const writeAwareness = (encoder, awareness, clients) => {
  encoding.writeVarUint(encoder, messageAwareness)
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
}
const writeDenied = (encoder, reason) => {
  encoding.writeVarUint(encoder, messageAuth)
  authProtocol.writePermissionDenied(encoder, reason)
}
const writeQuery = (encoder) => encoding.writeVarUint(encoder, messageQueryAwareness)
const writeControl = (encoder, json) => {
  encoding.writeVarUint(encoder, messageControl)
  encoding.writeVarString(encoder, json)
}

const single = (write) => {
  const encoder = encoding.createEncoder()
  write(encoder)
  return encoding.toUint8Array(encoder)
}

// --- Expected values, computed from the sources rather than from the frames. ---

const expStep1 = (doc) => ({ kind: 'sync_step1', payload: hex(Y.encodeStateVector(doc)) })
const expStep2 = (doc, sv) => ({ kind: 'sync_step2', payload: hex(Y.encodeStateAsUpdate(doc, sv)) })
const expUpdate = (update) => ({ kind: 'update', payload: hex(update) })
const expAwareness = (awareness, clients) => ({
  kind: 'awareness',
  entries: clients.map((id) => ({
    client_id: id,
    clock: awareness.meta.get(id).clock,
    state: JSON.stringify(awareness.getStates().get(id) ?? null)
  }))
})

// --- Documents. ---

const empty = newDoc(1)

// Alice types, including an emoji (two UTF-16 code units) and a combining accent, then deletes.
const alice = newDoc(1234567)
const aliceUpdates = []
alice.on('update', (u) => aliceUpdates.push(u))
const aliceText = alice.getText('content')
alice.transact(() => aliceText.insert(0, 'Hello, world!'))
aliceText.insert(7, '🦀 ') // emoji inside the text
aliceText.insert(aliceText.length, ' Zoë — 日本語')
aliceText.delete(0, 7) // remove "Hello, "
aliceText.format(0, 2, { bold: true })

// Bob has seen Alice's first update and then typed on his own.
const bob = newDoc(4294967295) // largest Yjs client id (uint32): a 5-byte varUint
Y.applyUpdate(bob, aliceUpdates[0])
bob.getText('content').insert(0, '>> ')
const bobSv = Y.encodeStateVector(bob)

// --- Sync vectors. ---

frame('sync_step1_empty_doc', single((e) => writeStep1(e, empty)), [expStep1(empty)])
frame('sync_step1_alice', single((e) => writeStep1(e, alice)), [expStep1(alice)])
frame('sync_step1_bob_two_clients', single((e) => writeStep1(e, bob)), [expStep1(bob)])
frame('sync_step2_empty_doc', single((e) => writeStep2(e, empty, undefined)), [expStep2(empty, undefined)])
frame('sync_step2_alice_full_state', single((e) => writeStep2(e, alice, undefined)), [expStep2(alice, undefined)])
frame('sync_step2_alice_diff_against_bob', single((e) => writeStep2(e, alice, bobSv)), [expStep2(alice, bobSv)])
frame('sync_step2_bob_full_state', single((e) => writeStep2(e, bob, undefined)), [expStep2(bob, undefined)])
aliceUpdates.forEach((u, i) => {
  frame(`update_alice_${i}`, single((e) => writeUpdate(e, u)), [expUpdate(u)])
})
const merged = Y.mergeUpdates(aliceUpdates)
frame('update_alice_merged', single((e) => writeUpdate(e, merged)), [expUpdate(merged)])

// A large update whose length needs a multi-byte varUint (> 16383 bytes: 3 bytes).
const big = newDoc(77)
big.getText('content').insert(0, 'ŵ'.repeat(9000))
const bigUpdate = Y.encodeStateAsUpdate(big)
frame('update_large_3_byte_length', single((e) => writeUpdate(e, bigUpdate)), [expUpdate(bigUpdate)])

// --- Awareness vectors: real Awareness instances on real docs. ---

const aw = new awarenessProtocol.Awareness(alice)
aw.setLocalState({
  user: { name: 'Alice 🦀', color: '#30bced', colorLight: '#30bced33' },
  cursor: { anchor: { type: null, tname: 'content', item: { client: 1234567, clock: 3 }, assoc: 0 } }
})
frame('awareness_single_client', single((e) => writeAwareness(e, aw, [alice.clientID])), [expAwareness(aw, [alice.clientID])])

// Other peers' awareness reaches Alice's instance through applyAwarenessUpdate, as over the wire.
const peers = [
  [bob, { user: { name: 'Bob "the builder"\n\tüñí', color: '#ff0000' } }],
  [newDoc(128), { user: { name: '日本語のユーザー', color: '#00ff00' }, extra: [1, 2.5, true, null, 'x\\y'] }],
  [newDoc(300), { user: { name: 'Ωμέγα 👩🏽‍💻', color: '#0000ff' } }],
  [newDoc(2), {}]
]
const peerAwareness = []
for (const [doc, state] of peers) {
  const a = new awarenessProtocol.Awareness(doc)
  a.setLocalState(state)
  a.setLocalStateField('user', state.user ?? null) // bump the clock a second time
  awarenessProtocol.applyAwarenessUpdate(aw, awarenessProtocol.encodeAwarenessUpdate(a, [doc.clientID]), 'remote')
  peerAwareness.push(a)
}
// Client 300 leaves: its state becomes null at a newer clock (what y-websocket sends on close).
const leaver = peerAwareness[2]
leaver.setLocalState(null)
awarenessProtocol.applyAwarenessUpdate(aw, awarenessProtocol.encodeAwarenessUpdate(leaver, [300]), 'remote')
// Client 2 is removed by a timeout-style removal on Alice's side.
awarenessProtocol.removeAwarenessStates(aw, [2], 'timeout')

const everyone = [alice.clientID, bob.clientID, 128, 300, 2]
frame('awareness_several_clients_with_removals', single((e) => writeAwareness(e, aw, everyone)), [expAwareness(aw, everyone)])
frame('awareness_removal_only', single((e) => writeAwareness(e, leaver, [300])), [expAwareness(leaver, [300])])
frame('awareness_no_entries', single((e) => writeAwareness(e, aw, [])), [expAwareness(aw, [])])

// --- Auth. ---

frame('auth_permission_denied', single((e) => writeDenied(e, 'read-only connection')), [{ kind: 'permission_denied', reason: 'read-only connection' }])
frame('auth_permission_denied_unicode', single((e) => writeDenied(e, 'Zugriff verweigert — 🔒 «nur lesen»')), [{ kind: 'permission_denied', reason: 'Zugriff verweigert — 🔒 «nur lesen»' }])
frame('auth_permission_denied_empty_reason', single((e) => writeDenied(e, '')), [{ kind: 'permission_denied', reason: '' }])

// --- Query awareness (lib0 encoding: y-websocket writes just the tag). ---

frame('query_awareness', single(writeQuery), [{ kind: 'query_awareness' }])

// --- Weft control (tag 100): lib0 varString of JSON.stringify, as a browser client sends it. ---

const controls = [
  { type: 'hello', user: { name: 'Zoë 🦀', color: '#30bced' } },
  { type: 'hello' },
  { type: 'typing', active: true },
  { type: 'welcome', connection: '6f1c2a4e-0b7d-4c1e-9f3a-2d5e8b7c9a01', role: 'write', room: 'Käse & Brot', users: 2 },
  { type: 'saved', version: 9007199254740991 }
]
controls.forEach((c) => {
  const json = JSON.stringify(c)
  frame(`control_${c.type}${c.user ? '_user' : ''}`, single((e) => writeControl(e, json)), [{ kind: 'control', json }])
})

// --- Multi-message frames: several messages written into one lib0 encoder. ---

frame('multi_step1_then_awareness',
  single((e) => { writeStep1(e, alice); writeAwareness(e, aw, [alice.clientID]) }),
  [expStep1(alice), expAwareness(aw, [alice.clientID])])
frame('multi_step1_step2_updates_query',
  single((e) => {
    writeStep1(e, bob)
    writeStep2(e, alice, bobSv)
    aliceUpdates.forEach((u) => writeUpdate(e, u))
    writeQuery(e)
  }),
  [expStep1(bob), expStep2(alice, bobSv), ...aliceUpdates.map(expUpdate), { kind: 'query_awareness' }])
frame('multi_query_denied_control',
  single((e) => { writeQuery(e); writeDenied(e, 'no'); writeControl(e, '{"type":"typing","active":false}') }),
  [{ kind: 'query_awareness' }, { kind: 'permission_denied', reason: 'no' }, { kind: 'control', json: '{"type":"typing","active":false}' }])

// --- varUint edge values (lib0 writeVarUint), raw and inside an awareness entry. ---

const edges = [0, 127, 128, 300, 16383, 16384, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]
for (const v of edges) {
  vectors.push({ name: `var_uint_${v}`, kind: 'var_uint', hex: hex(single((e) => encoding.writeVarUint(e, v))), expect: v })
}
// An awareness entry whose client id and clock are the extreme values: built with lib0 directly,
// since a JS Awareness never has clocks this large.
const edgeEntries = [[2 ** 53 - 1, 2 ** 32], [2 ** 32, 0], [0, 2 ** 53 - 1]]
frame('awareness_var_uint_edges',
  single((e) => {
    const inner = encoding.createEncoder()
    encoding.writeVarUint(inner, edgeEntries.length)
    for (const [id, clock] of edgeEntries) {
      encoding.writeVarUint(inner, id)
      encoding.writeVarUint(inner, clock)
      encoding.writeVarString(inner, JSON.stringify({ id }))
    }
    encoding.writeVarUint(e, messageAwareness)
    encoding.writeVarUint8Array(e, encoding.toUint8Array(inner))
  }),
  [{ kind: 'awareness', entries: edgeEntries.map(([id, clock]) => ({ client_id: id, clock, state: JSON.stringify({ id }) })) }])

aw.destroy()
peerAwareness.forEach((a) => a.destroy())

process.stdout.write(JSON.stringify(vectors, null, 2) + '\n')
