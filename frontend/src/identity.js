// Who this browser is: a display name and a colour, kept in localStorage so they survive reloads
// and are shared by every document. y-codemirror.next reads them from the awareness field
// `user: { name, color, colorLight }`; the control channel's `hello` carries `{ name, color }`.

const STORAGE_KEY = 'weft.user'

/** Longest display name we send; the server bounds the whole awareness state anyway. */
export const MAX_NAME = 40

/**
 * Caret and avatar colours. Dark enough for the white name label y-codemirror.next draws on
 * them, and distinct from each other.
 */
export const PALETTE = [
  '#2563eb', // blue
  '#db2777', // pink
  '#16a34a', // green
  '#ea580c', // orange
  '#9333ea', // purple
  '#0891b2', // cyan
  '#dc2626', // red
  '#4f46e5', // indigo
  '#0d9488', // teal
  '#b45309' // amber
]

const ADJECTIVES = ['Brisk', 'Calm', 'Clever', 'Eager', 'Gentle', 'Happy', 'Keen', 'Lucky', 'Merry', 'Quiet', 'Swift', 'Witty']
const ANIMALS = ['Badger', 'Crane', 'Falcon', 'Fox', 'Heron', 'Lynx', 'Otter', 'Owl', 'Panda', 'Puffin', 'Robin', 'Wren']

const pick = (list) => list[crypto.getRandomValues(new Uint32Array(1))[0] % list.length]

/** Whether `c` is a colour we accept: `#rrggbb`. Anything else could smuggle CSS. */
export const isColor = (c) => typeof c === 'string' && /^#[0-9a-fA-F]{6}$/.test(c)

/** Trims and bounds a display name; empty stays empty. */
export const cleanName = (name) =>
  String(name ?? '')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, MAX_NAME)

/**
 * The palette colour of a name, the same in every browser: the colour a new identity starts
 * with, and the one the History panel gives authors who are not here to tell theirs.
 * FNV-1a over the name's code points.
 */
export const colorForName = (name) => {
  let hash = 0x811c9dc5
  for (const ch of cleanName(name)) {
    hash ^= ch.codePointAt(0) ?? 0
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return PALETTE[hash % PALETTE.length]
}

/**
 * @typedef {{ name: string, color: string }} Identity
 */

/** @returns {Identity} */
export const loadIdentity = () => {
  let stored = null
  try {
    stored = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? 'null')
  } catch {
    // Private mode or a corrupt entry: start fresh.
  }
  const name = cleanName(stored?.name) || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
  const identity = { name, color: isColor(stored?.color) ? stored.color : colorForName(name) }
  saveIdentity(identity)
  return identity
}

/** @param {Identity} identity */
export const saveIdentity = (identity) => {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(identity))
  } catch {
    // Storage full or disabled: the identity still holds for this tab.
  }
}

/**
 * The user (`sub`) a Weft token names, cleaned, or '' when it names none: this page's display
 * name. The page cannot check the signature; the server does, and this is only a label.
 */
export const tokenSubject = (token) => {
  const claims = String(token ?? '').split('.')[1]
  if (!claims) return ''
  try {
    const binary = atob(claims.replace(/-/g, '+').replace(/_/g, '/'))
    const json = new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)))
    const sub = JSON.parse(json)?.sub
    return typeof sub === 'string' ? cleanName(sub) : ''
  } catch {
    return ''
  }
}

/** The awareness `user` field y-codemirror.next expects. */
export const awarenessUser = (identity) => ({
  name: identity.name,
  color: identity.color,
  // 8-digit hex: the colour at 20 % opacity, for remote selections.
  colorLight: `${identity.color}33`
})

/** Initials for an avatar: "Merry Otter" → "MO", "ana" → "A". */
export const initials = (name) => {
  const words = cleanName(name).split(' ').filter(Boolean)
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words
  return letters.map((w) => Array.from(w)[0]?.toUpperCase() ?? '').join('') || '?'
}
