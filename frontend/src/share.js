// Sharing from the editor: "Copy edit link" and "Copy read-only link", with an expiry picker.
// With tokens on, the links carry a token minted by the server (`POST /api/tokens`), which only
// an admin link may do; in open mode every link edits, so the edit link is the plain address and
// there is no read-only link. When this page cannot mint, the panel says why instead of
// offering buttons that would fail.
//
// Hooks for tests (stable; change them together with tests/tests/browser_markdown.rs):
//   #share-button[aria-expanded], #share-panel[data-mode="open|admin|denied"],
//   #share-ttl, #share-edit, #share-read, #share-note, #share-result (the last link, in full)

import { byId, fullTime } from './common.js'

/** Expiry choices, seconds; null: as long as the link that mints it. */
const TTLS = [
  ['1 hour', 3600],
  ['1 day', 86_400],
  ['7 days', 7 * 86_400],
  ['30 days', 30 * 86_400]
]

/**
 * The claims of this page's token, read without checking the signature (the server checks it;
 * this only decides what the panel offers). Null when there is no token or it is unreadable.
 * @param {string | null} token
 * @returns {{role?: string, doc?: string, all_docs?: boolean, exp?: number} | null}
 */
export const claimsOf = (token) => {
  const part = token?.split('.')[1]
  if (!part) return null
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return claims && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

export class SharePanel {
  /**
   * @param {object} o
   * @param {string} o.docId
   * @param {string | null} o.token this page's token
   * @param {(text: string) => Promise<void>} o.copy copies text to the clipboard
   * @param {(text: string, level?: string) => void} o.toast
   */
  constructor ({ docId, token, copy, toast }) {
    this.docId = docId
    this.token = token
    this.copy = copy
    this.toast = toast
    this.ui = {
      button: byId('share-button'),
      panel: byId('share-panel'),
      ttl: /** @type {HTMLSelectElement} */ (byId('share-ttl')),
      ttlRow: byId('share-ttl-row'),
      edit: /** @type {HTMLButtonElement} */ (byId('share-edit')),
      read: /** @type {HTMLButtonElement} */ (byId('share-read')),
      note: byId('share-note'),
      result: /** @type {HTMLInputElement} */ (byId('share-result'))
    }
    this.setup()
  }

  /** What this page may do: mint (admin), nothing (denied), or plain links (open mode). */
  mode () {
    if (!this.token) return 'open'
    const claims = claimsOf(this.token)
    const covers = claims?.all_docs === true || claims?.doc === this.docId
    return claims?.role === 'admin' && covers ? 'admin' : 'denied'
  }

  setup () {
    const { ui } = this
    const mode = this.mode()
    ui.panel.dataset.mode = mode
    const claims = claimsOf(this.token)
    for (const [label, secs] of TTLS) ui.ttl.append(new Option(label, String(secs)))
    const until = typeof claims?.exp === 'number' && claims.exp < 1e11 ? fullTime(claims.exp * 1000) : null
    ui.ttl.append(new Option(until ? `Until ${until} (when your link ends)` : 'Never', ''))
    ui.ttl.value = String(7 * 86_400)
    ui.ttlRow.hidden = mode !== 'admin'
    if (mode === 'open') {
      ui.read.disabled = true
      ui.note.textContent =
        'This server runs without access tokens: anyone with the address can edit, so there are no read-only links. An operator can turn tokens on with an auth secret.'
    } else if (mode === 'denied') {
      ui.edit.disabled = true
      ui.read.disabled = true
      const role = claims?.role === 'read' ? 'read' : 'edit'
      ui.note.textContent = `Your link lets you ${role} this document but not share it: only an admin link can create links for others. Ask whoever gave you this link.`
    } else {
      ui.note.textContent = 'Links carry their own access. Anyone holding one can use it until it expires.'
    }
    ui.edit.addEventListener('click', () => this.share('write'))
    ui.read.addEventListener('click', () => this.share('read'))
    ui.button.addEventListener('click', () => (ui.panel.hidden ? this.open() : this.close()))
    ui.panel.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        this.close()
        ui.button.focus()
      }
    })
    document.addEventListener('mousedown', (e) => {
      const t = /** @type {Node} */ (e.target)
      if (!ui.panel.hidden && !ui.panel.contains(t) && !ui.button.contains(t)) this.close()
    })
  }

  open () {
    this.ui.panel.hidden = false
    this.ui.button.setAttribute('aria-expanded', 'true')
    const first = [this.ui.edit, this.ui.read].find((b) => !b.disabled)
    first?.focus()
  }

  close () {
    this.ui.panel.hidden = true
    this.ui.button.setAttribute('aria-expanded', 'false')
  }

  /** @param {'read' | 'write'} role */
  async share (role) {
    const { ui } = this
    const ttl = ui.ttl.value === '' ? null : Number(ui.ttl.value)
    ui.panel.dataset.busy = 'true'
    try {
      const res = await fetch('/api/tokens', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {})
        },
        body: JSON.stringify({ doc: this.docId, role, ttl_secs: this.mode() === 'admin' ? ttl : null })
      })
      const body = await res.json().catch(() => null)
      if (!res.ok) {
        ui.note.textContent = `No link was made: ${body?.message ?? `the server answered ${res.status}`}.`
        return
      }
      if (role === 'read' && !body.token) {
        ui.note.textContent = 'This server runs without access tokens, so a read-only link is not possible.'
        return
      }
      const link = `${location.origin}${body.link}`
      ui.result.value = link
      ui.result.hidden = false
      ui.result.dataset.role = role
      const what = role === 'read' ? 'Read-only link' : 'Edit link'
      const ends = body.expires_at ? ` It works until ${fullTime(body.expires_at * 1000)}.` : ''
      const capped = body.capped ? ' (your own link ends then, so this one does too)' : ''
      try {
        await this.copy(link)
        this.toast(`${what} copied.${ends}${capped}`)
      } catch {
        ui.result.select()
        this.toast(`${what} made: copy it from the box.${ends}`)
      }
    } catch (e) {
      ui.note.textContent = `No link was made: the server could not be reached (${e instanceof Error ? e.message : e}).`
    } finally {
      delete ui.panel.dataset.busy
    }
  }
}
