// The server dashboard: charts of the last five minutes, totals, server info and open rooms.
//
// The server pushes a snapshot a second over /dashboard/ws. Where WebSockets are blocked (the
// socket never opens, or keeps dropping) the page polls /dashboard/snapshots instead, says
// "live (polling)", and keeps trying the socket in the background to return to push.
// `?transport=poll` forces polling. With tokens on, `?token=` (an admin token) is passed on.
// Both transports carry the same message: { server, nodes, totals, rooms, rooms_open, webhooks,
// snapshots }.

import './diagnostics.js'
import './theme.js'
import { byId, fullTime, h, timeAgo } from './common.js'

const WINDOW_MS = 5 * 60 * 1000
const MAX_SNAPSHOTS = 300
const POLL_EVERY_MS = 1000
/** While polling, how often the socket is tried again. */
const PUSH_RETRY_MS = 10_000
/** Drops of an open socket tolerated within DROP_WINDOW_MS before falling back to polling. */
const MAX_DROPS = 3
const DROP_WINDOW_MS = 60_000

const params = new URLSearchParams(location.search)
const token = params.get('token')
const forcePoll = params.get('transport') === 'poll'

/** @type {Array<Record<string, number>>} */
let snapshots = []
let lastT = 0

// ---- rendering ----

const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 })
const num = (x) => (x == null ? '–' : nf.format(x))
const bytes = (n) => {
  if (n == null) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${nf.format(n)} ${units[i]}`
}
const duration = (secs) => {
  const d = Math.floor(secs / 86400)
  const hh = Math.floor((secs % 86400) / 3600)
  const m = Math.floor((secs % 3600) / 60)
  const s = secs % 60
  if (d) return `${d} d ${hh} h`
  if (hh) return `${hh} h ${m} min`
  if (m) return `${m} min ${s} s`
  return `${s} s`
}

const SVG = 'http://www.w3.org/2000/svg'

/** Draws `series` (snapshot keys) of the last five minutes into a chart's SVG. */
const drawChart = (name, series, format) => {
  const svg = document.querySelector(`[data-chart="${name}"] svg`)
  if (!svg) return
  const now = snapshots.length ? snapshots[snapshots.length - 1].t : Date.now()
  const from = now - WINDOW_MS
  const shown = snapshots.filter((s) => s.t >= from)
  const max = Math.max(1e-9, ...shown.flatMap((s) => series.map((k) => s[k] ?? 0)))
  const top = max * 1.15
  svg.replaceChildren()
  series.forEach((key, i) => {
    const points = shown
      .map((s) => `${(((s.t - from) / WINDOW_MS) * 300).toFixed(1)},${(70 - ((s[key] ?? 0) / top) * 66).toFixed(1)}`)
      .join(' ')
    const line = document.createElementNS(SVG, 'polyline')
    line.setAttribute('class', `series-${i}`)
    line.setAttribute('points', points)
    svg.append(line)
  })
  const scale = document.createElementNS(SVG, 'text')
  scale.setAttribute('class', 'scale')
  scale.setAttribute('x', '3')
  scale.setAttribute('y', '10')
  scale.textContent = `max ${format(max)}`
  svg.append(scale)
}

const setText = (id, text) => {
  byId(id).textContent = text
}

const renderRooms = (rooms, open) => {
  const body = byId('rooms').querySelector('tbody')
  setText('rooms-summary', open > rooms.length ? `(${rooms.length} busiest of ${open})` : `(${open})`)
  if (!rooms.length) {
    body.replaceChildren(h('tr', {}, [h('td', { colspan: '4', class: 'empty', text: 'No document is open right now.' })]))
    return
  }
  body.replaceChildren(
    ...rooms.map((r) =>
      h('tr', { dataset: { room: r.id } }, [
        h('td', {}, [
          h('a', { href: `/d/${encodeURIComponent(r.id)}`, target: '_blank', rel: 'noopener', text: r.title || r.id }),
          r.title ? h('span', { class: 'doc-key', text: r.id }) : null
        ]),
        h('td', { class: 'num', text: num(r.users) }),
        h('td', { class: 'num', text: bytes(r.size_bytes) }),
        h('td', r.active_ms ? { text: timeAgo(r.active_ms), title: fullTime(r.active_ms) } : { text: 'not since it loaded', class: 'muted' })
      ])
    )
  )
}

/** The state of a webhook endpoint in words: ok, retrying since when, or failing. */
const webhookState = (w) => {
  if (w.state === 'retrying') {
    const since = Date.parse(w.retrying_since)
    return { text: `retrying since ${timeAgo(since)}`, title: fullTime(since) }
  }
  if (w.state === 'failing') {
    return { text: `failing (${num(w.failed.length)} given up)` }
  }
  return { text: 'ok' }
}

/** The cluster's nodes (`null` on a single node, which hides the panel). */
const renderNodes = (nodes) => {
  const section = byId('nodes-section')
  section.hidden = !nodes
  if (!nodes) return
  setText('nodes-summary', `(${nodes.length})`)
  byId('nodes').querySelector('tbody').replaceChildren(
    ...nodes.map((n) =>
      h('tr', { dataset: { node: n.name } }, [
        h('td', { text: n.this ? `${n.name} (this node)` : n.name }),
        h('td', { class: 'num', text: num(n.connections) }),
        h('td', { class: 'num', text: num(n.rooms) }),
        h('td', { text: n.this ? 'now' : `${num(n.seen_secs_ago)} s ago` })
      ])
    )
  )
}

const renderWebhooks = (webhooks = []) => {
  const body = byId('webhooks').querySelector('tbody')
  setText('webhooks-summary', `(${webhooks.length})`)
  if (!webhooks.length) {
    body.replaceChildren(h('tr', {}, [h('td', { colspan: '5', class: 'empty', text: 'No webhook endpoint is configured (--webhook-url).' })]))
    return
  }
  body.replaceChildren(
    ...webhooks.map((w) =>
      h('tr', { dataset: { webhook: w.url } }, [
        h('td', { text: w.url }),
        h('td', webhookState(w)),
        h('td', { class: 'num', text: num(w.pending) }),
        h('td', { class: 'num', text: `${num(w.delivered)} / ${num(w.failed_attempts)}` }),
        h('td', w.last_error ? { text: w.last_error } : { text: 'none', class: 'muted' })
      ])
    )
  )
}

const render = (msg) => {
  const s = snapshots[snapshots.length - 1]
  const { server, totals } = msg
  setText('info-version', server.version)
  setText('info-uptime', duration(server.uptime_secs))
  setText('info-data', server.data_dir)
  setText('info-auth', server.auth === 'tokens' ? 'tokens required' : 'open (no tokens)')
  setText('info-durability', server.durability)
  if (s) {
    setText('info-documents', num(s.documents))
    setText('now-connections', num(s.connections))
    setText('now-rooms', num(s.rooms))
    setText('now-messages', `${num(s.messages_in_per_sec)} / ${num(s.messages_out_per_sec)}`)
    setText('now-flush', s.flushes_per_sec ? `${num(s.flush_p50_ms)} / ${num(s.flush_p99_ms)} ms` : 'idle')
    setText('now-memory', bytes(s.memory_bytes))
    setText('now-updates', `${num(s.updates_per_sec)} / ${num(s.fanout_per_sec)}`)
  }
  drawChart('connections', ['connections'], num)
  drawChart('rooms', ['rooms'], num)
  drawChart('messages', ['messages_in_per_sec', 'messages_out_per_sec'], num)
  drawChart('flush', ['flush_p50_ms', 'flush_p99_ms'], (x) => `${num(x)} ms`)
  drawChart('memory', ['memory_bytes'], bytes)
  drawChart('updates', ['updates_per_sec', 'fanout_per_sec'], num)
  setText('total-messages', `${num(totals.messages_in)} / ${num(totals.messages_out)}`)
  setText('total-bytes', `${bytes(totals.bytes_in)} / ${bytes(totals.bytes_out)}`)
  setText('total-updates', num(totals.updates_applied))
  setText('total-flushes', num(totals.flushes))
  setText('total-queue-full', num(totals.queue_full_disconnects))
  setTally('total-refused', totals.refused)
  setTally('total-disconnects', totals.disconnects)
  renderRooms(msg.rooms, msg.rooms_open)
  renderWebhooks(msg.webhooks)
  renderNodes(msg.nodes)
}

/** Shows a tally (`{label: count}`) as its total with each label's count below it. */
const setTally = (id, tally) => {
  const entries = Object.entries(tally ?? {})
  const total = entries.reduce((a, [, n]) => a + n, 0)
  byId(id).replaceChildren(
    num(total),
    ...(entries.length ? [h('small', { text: entries.map(([k, n]) => `${k.replaceAll('_', ' ')}: ${num(n)}`).join(', ') })] : [])
  )
}

/** Takes one message from either transport. */
const receive = (msg) => {
  for (const s of msg.snapshots) {
    if (s.t > lastT) {
      snapshots.push(s)
      lastT = s.t
    }
  }
  if (snapshots.length > MAX_SNAPSHOTS) snapshots = snapshots.slice(-MAX_SNAPSHOTS)
  render(msg)
}

// ---- transport ----

const LABELS = { push: 'live', poll: 'live (polling)', connecting: 'connecting…', offline: 'offline, retrying' }
const setTransport = (mode) => {
  const el = byId('transport')
  if (el.dataset.transport === mode) return
  el.dataset.transport = mode
  setText('transport-label', LABELS[mode])
}

let socket = null
let pushRetry = null
let pollTimer = null
let drops = []

const withToken = (path, extra = {}) => {
  const q = new URLSearchParams(extra)
  if (token) q.set('token', token)
  const qs = q.toString()
  return qs ? `${path}?${qs}` : path
}

const poll = async () => {
  try {
    const res = await fetch(withToken('/dashboard/snapshots', lastT ? { since: String(lastT) } : {}), { cache: 'no-store' })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    receive(await res.json())
    if (!socket || socket.readyState !== WebSocket.OPEN) setTransport('poll')
  } catch (e) {
    setTransport('offline')
  }
}

const startPolling = () => {
  if (pollTimer) return
  poll()
  pollTimer = setInterval(poll, POLL_EVERY_MS)
}

const stopPolling = () => {
  clearInterval(pollTimer)
  pollTimer = null
}

const schedulePush = (ms) => {
  clearTimeout(pushRetry)
  pushRetry = setTimeout(connectPush, ms)
}

function connectPush() {
  if (socket) return
  const url = new URL(withToken('/dashboard/ws'), location.href)
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'
  let opened = false
  const ws = new WebSocket(url)
  socket = ws
  ws.onopen = () => {
    opened = true
    stopPolling()
    setTransport('push')
  }
  ws.onmessage = (e) => {
    try {
      receive(JSON.parse(e.data))
    } catch (err) {
      console.warn('dashboard: unreadable push', err)
    }
  }
  ws.onclose = () => {
    socket = null
    const now = Date.now()
    if (opened) drops = [...drops.filter((t) => now - t < DROP_WINDOW_MS), now]
    // A socket that never opened is blocked (or the server is down); one that keeps dropping
    // is as good as blocked. Either way, poll, and keep trying the socket in the background.
    if (!opened || drops.length >= MAX_DROPS) {
      startPolling()
      schedulePush(PUSH_RETRY_MS)
    } else {
      setTransport('connecting')
      schedulePush(1000)
    }
  }
}

if (forcePoll) {
  startPolling()
} else {
  connectPush()
}

// Refresh "last activity" and the charts' time axis even between snapshots.
setInterval(() => {
  if (!snapshots.length) return
  const stale = Date.now() - snapshots[snapshots.length - 1].t > 5000
  byId('transport').dataset.stale = String(stale)
}, 1000)
