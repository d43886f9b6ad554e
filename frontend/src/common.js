// Small helpers shared by the pages: DOM building, time formatting, ids.

/**
 * Creates an element. `props` may hold attributes (strings), `dataset`, `class`, `text`, and
 * `on<event>` handlers; children are nodes or strings (always inserted as text, never as HTML).
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {Array<Node | string | null | undefined | false>} [children]
 * @returns {HTMLElement}
 */
export const h = (tag, props = {}, children = []) => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue
    if (k === 'class') el.className = v
    else if (k === 'text') el.textContent = v
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children) {
    if (c == null || c === false) continue
    el.append(typeof c === 'string' ? document.createTextNode(c) : c)
  }
  return el
}

/** Looks up an element that the page's HTML must contain. */
export const byId = (id) => {
  const el = document.getElementById(id)
  if (!el) throw new Error(`page is missing #${id}`)
  return el
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

/** "just now", "5 minutes ago", "yesterday", … for a time in ms since the epoch. */
export const timeAgo = (ms, now = Date.now()) => {
  const s = Math.round((ms - now) / 1000)
  const abs = Math.abs(s)
  if (abs < 45) return 'just now'
  if (abs < 3600) return relative.format(Math.round(s / 60), 'minute')
  if (abs < 86400) return relative.format(Math.round(s / 3600), 'hour')
  if (abs < 86400 * 30) return relative.format(Math.round(s / 86400), 'day')
  return absolute.format(new Date(ms))
}

/** A full date and time, for tooltips. */
export const fullTime = (ms) => absolute.format(new Date(ms))

/**
 * A random (v4) UUID. `crypto.randomUUID` exists only in secure contexts (https, localhost), and
 * a self-hosted server is often reached over plain http on a LAN, so fall back to
 * `getRandomValues`, which every context has.
 */
export const uuid = () => {
  if (typeof crypto.randomUUID === 'function' && window.isSecureContext) return crypto.randomUUID()
  const b = crypto.getRandomValues(new Uint8Array(16))
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** The editor URL of a document id. */
export const docHref = (id) => `/d/${encodeURIComponent(id)}`

/**
 * Why `id` cannot name a document, or null when it can. Mirrors the server's `RoomName` rules
 * (weft-protocol `room.rs`); the server checks again and has the final word (including the
 * length limit, which is configurable there).
 * @param {string} id
 * @returns {string | null}
 */
export const roomNameProblem = (id) => {
  if (id.length === 0) return 'The document name is empty.'
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(id)) return 'The document name contains a control character.'
  if (id.includes('/')) return 'The document name contains “/”.'
  if (id.trim() !== id) return 'The document name starts or ends with a space.'
  return null
}
