// The editor's History panel: the document's versions as a timeline (`GET /api/docs/{id}/versions`),
// one version's text with what changed since the version before it highlighted in each author's
// colour (`…/versions/{v}/diff`), naming the current text (`POST …/versions`) and restoring a
// version after a confirm (`POST …/versions/{v}/restore`).
//
// While the panel is open the selected version takes the editor's place; the live editor stays
// mounted and connected underneath, so closing the panel returns to it at once, with every edit
// made meanwhile (a restore included) already in it.
//
// Hooks for tests (stable; change them together with tests/tests/browser_history.rs):
//   #history-button[aria-expanded]
//   #history-panel[data-state="open|closed"][data-view="list|version"]
//   #history-list[data-state="loading|ready|error"] > li[data-version-id][data-named][aria-selected]
//   #history-view[data-state="empty|loading|ready|error"][data-version-id]
//   #history-text ins.hist-ins[data-author], del.hist-del[data-author]
//   #history-name, #history-name-input, #history-restore, #history-confirm, #history-confirm-ok,
//   #history-named-only, #history-error

import { byId, fullTime, h, timeAgo } from './common.js'
import { cleanName, colorForName, initials, isColor } from './identity.js'

/** Versions fetched per page; "Show older versions" asks for this many more. */
const PAGE = 50
/** While the panel is open the timeline refreshes this often, to show versions recorded meanwhile. */
const REFRESH_MS = 15000
/** Avatars shown per version; more authors are summarised as "+N". */
const MAX_AVATARS = 4
/** Colour of text whose author the server does not know. */
const UNKNOWN_COLOR = '#64748b'
/** The author the server records when a writer had neither a token subject nor a name. */
const ANONYMOUS = 'anonymous'

/** An answer from the API that was not a success, with the server's error code and message. */
class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code
   * @param {string} message
   */
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** Words for a failed call: what we tried, then why, in the server's own words where it gave some. */
const describe = (what, e) => {
  if (!(e instanceof ApiError)) return `${what}: ${e instanceof Error ? e.message : e}`
  if (e.status === 0) return `${what}: the server cannot be reached. Check the connection and try again.`
  if (e.status === 401) return `${what}: this page has no valid access link (${e.message}).`
  if (e.status === 403) return `${what}: your access link does not allow it (${e.message}).`
  return `${what}: ${e.message}`
}

/** A version's time in ms since the epoch; NaN when the server sent something unreadable. */
const timeOf = (v) => Date.parse(v.created_at)

/** Characters, with a thin sign: "+12 −3". */
const counts = (v) => `+${Number(v.inserted) || 0} −${Number(v.deleted) || 0}`

export class HistoryPanel {
  /**
   * @param {object} o
   * @param {string} o.docId the document id, not yet URL-encoded
   * @param {string | null} o.token the page's access token, sent as a bearer token
   * @param {import('y-protocols/awareness').Awareness} o.awareness for the colours of people present
   * @param {() => void} o.onClose called after the panel closed, to return to live editing
   * @param {(text: string) => void} o.onRestored called after a restore, with words for the user
   */
  constructor ({ docId, token, awareness, onClose, onRestored }) {
    this.base = `/api/docs/${encodeURIComponent(docId)}/versions`
    this.token = token
    this.awareness = awareness
    this.onClose = onClose
    this.onRestored = onRestored
    /** Versions loaded, newest first, as the server sent them. */
    this.versions = /** @type {any[]} */ ([])
    this.limit = PAGE
    this.hasMore = false
    /** Id of the version shown (a string: ids are opaque to the page). */
    this.selected = /** @type {string | null} */ (null)
    this.canWrite = true
    this.timer = 0
    /** Bumped for each version shown, so an answer for an earlier selection is dropped. */
    this.viewSeq = 0
    this.listSeq = 0

    this.ui = {
      button: byId('history-button'),
      panel: byId('history-panel'),
      title: byId('history-title'),
      close: byId('history-close'),
      namedOnly: /** @type {HTMLInputElement} */ (byId('history-named-only')),
      error: byId('history-error'),
      nameButton: byId('history-name'),
      nameForm: /** @type {HTMLFormElement} */ (byId('history-name-form')),
      nameInput: /** @type {HTMLInputElement} */ (byId('history-name-input')),
      nameCancel: byId('history-name-cancel'),
      list: byId('history-list'),
      more: byId('history-more'),
      view: byId('history-view'),
      back: byId('history-back'),
      viewTitle: byId('history-view-title'),
      viewMeta: byId('history-view-meta'),
      viewAuthors: byId('history-view-authors'),
      restore: byId('history-restore'),
      text: byId('history-text'),
      confirm: /** @type {HTMLDialogElement} */ (byId('history-confirm')),
      confirmText: byId('history-confirm-text'),
      confirmOk: /** @type {HTMLButtonElement} */ (byId('history-confirm-ok')),
      confirmCancel: byId('history-confirm-cancel')
    }
    this.wire()
    this.renderView(null)
  }

  /** Whether the panel is open. */
  get isOpen () {
    return this.ui.panel.dataset.state === 'open'
  }

  /** Readers may browse history; only writers get "Name" and "Restore". */
  setCanWrite (canWrite) {
    if (this.canWrite === canWrite) return
    this.canWrite = canWrite
    this.ui.nameButton.hidden = !canWrite
    this.ui.restore.hidden = !canWrite || this.selected === null
    if (!canWrite) this.ui.nameForm.hidden = true
  }

  // ---- calls to the server ------------------------------------------------------------------

  /**
   * One API call with the page's token; JSON unless `text` is set. Throws an ApiError.
   * @param {string} path
   * @param {{ method?: string, body?: any, text?: boolean }} [o]
   */
  async api (path, { method = 'GET', body, text = false } = {}) {
    const headers = { accept: text ? 'text/plain' : 'application/json' }
    if (this.token) headers.authorization = `Bearer ${this.token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    let res
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    } catch {
      throw new ApiError(0, 'network', 'network error')
    }
    if (!res.ok) {
      const err = await res.json().catch(() => ({}))
      throw new ApiError(res.status, String(err.code ?? `http_${res.status}`), String(err.message ?? `the server answered ${res.status}`))
    }
    return text ? res.text() : res.json()
  }

  /** The path of a version's sub-resource. */
  versionPath (id, rest) {
    return `${this.base}/${encodeURIComponent(id)}/${rest}`
  }

  // ---- opening and closing ------------------------------------------------------------------

  open () {
    if (this.isOpen) return
    const { panel, button } = this.ui
    panel.hidden = false
    panel.dataset.state = 'open'
    panel.dataset.view = this.selected === null ? 'list' : 'version'
    document.body.dataset.history = 'open'
    button.setAttribute('aria-expanded', 'true')
    this.showError('')
    this.ui.title.focus()
    this.load({ focusList: true })
  }

  close () {
    if (!this.isOpen) return
    const { panel, button } = this.ui
    clearTimeout(this.timer)
    if (this.ui.confirm.open) this.ui.confirm.close()
    panel.hidden = true
    panel.dataset.state = 'closed'
    delete document.body.dataset.history
    button.setAttribute('aria-expanded', 'false')
    this.ui.nameForm.hidden = true
    this.onClose()
  }

  /** Whether the layout is the narrow one, where the list and a version take turns. */
  narrow () {
    return window.matchMedia('(max-width: 720px)').matches
  }

  // ---- the timeline -------------------------------------------------------------------------

  /**
   * Loads the newest `limit` versions and redraws the timeline, keeping the selection.
   * @param {{ focusList?: boolean, select?: string }} [o]
   */
  async load ({ focusList = false, select } = {}) {
    clearTimeout(this.timer)
    const seq = ++this.listSeq
    const { list } = this.ui
    if (this.versions.length === 0) list.dataset.state = 'loading'
    try {
      const page = await this.api(`${this.base}?limit=${this.limit}`)
      if (seq !== this.listSeq || !this.isOpen) return
      this.versions = Array.isArray(page.versions) ? page.versions.filter((v) => v && v.id != null) : []
      this.hasMore = page.next_offset != null
      list.dataset.state = 'ready'
      this.showError('')
    } catch (e) {
      if (seq !== this.listSeq || !this.isOpen) return
      if (e instanceof ApiError && e.code === 'doc_not_found') {
        // A new document is stored with its first edit: until then it has no history.
        this.versions = []
        this.hasMore = false
        list.dataset.state = 'ready'
        this.showError('')
      } else {
        list.dataset.state = 'error'
        this.showError(describe('Could not load the versions', e))
      }
    }
    this.renderList()
    if (select !== undefined) this.select(select)
    else if (this.selected === null && this.versions.length > 0 && !this.narrow()) this.select(String(this.versions[0].id), { focus: false })
    if (focusList && document.activeElement === this.ui.title) this.focusItem(this.selected)
    if (this.isOpen && document.visibilityState === 'visible') this.timer = setTimeout(() => this.load(), REFRESH_MS)
  }

  /** The versions the filter lets through. */
  shown () {
    return this.ui.namedOnly.checked ? this.versions.filter((v) => typeof v.name === 'string' && v.name !== '') : this.versions
  }

  /** The colour people see `name`'s caret in: theirs when they are here, else derived from the name. */
  colorOf (name) {
    if (!name) return UNKNOWN_COLOR
    for (const state of this.awareness.getStates().values()) {
      const user = state?.user
      if (user && cleanName(user.name) === name && isColor(user.color)) return user.color
    }
    return name === ANONYMOUS ? UNKNOWN_COLOR : colorForName(name)
  }

  /** A small round avatar with initials in the author's colour. */
  avatar (name, cls = 'avatar avatar-xs') {
    const el = h('span', { class: cls, title: name, 'aria-hidden': 'true', text: initials(name) })
    el.style.setProperty('--user-color', this.colorOf(name))
    return el
  }

  /** The authors of a version as avatars, at most MAX_AVATARS and a "+N". */
  avatars (authors) {
    const names = Array.isArray(authors) ? authors.map((a) => cleanName(a)).filter(Boolean) : []
    const shown = names.slice(0, MAX_AVATARS).map((n) => this.avatar(n))
    if (names.length > MAX_AVATARS) shown.push(h('span', { class: 'avatar avatar-xs avatar-more', 'aria-hidden': 'true', text: `+${names.length - MAX_AVATARS}` }))
    // No authors (nothing changed, or changes found after a crash): words only, no empty gap.
    if (names.length === 0) return h('span', { class: 'sr-only', text: 'no authors recorded' })
    return h('span', { class: 'hist-avatars' }, [...shown, h('span', { class: 'sr-only', text: `by ${names.join(', ')}` })])
  }

  item (v) {
    const id = String(v.id)
    const ms = timeOf(v)
    const named = typeof v.name === 'string' && v.name !== ''
    const when = Number.isNaN(ms) ? String(v.created_at ?? '') : fullTime(ms)
    const selected = id === this.selected
    return h(
      'li',
      {
        class: named ? 'hist-item hist-named' : 'hist-item',
        role: 'option',
        tabindex: '-1',
        'aria-selected': String(selected),
        dataset: { versionId: id, named: String(named) }
      },
      [
        h('span', { class: 'hist-dot', 'aria-hidden': 'true' }),
        h('span', { class: 'hist-body' }, [
          h('span', { class: 'hist-title', text: named ? v.name : when }),
          h('span', { class: 'hist-when' }, [
            h('time', { datetime: Number.isNaN(ms) ? null : new Date(ms).toISOString(), title: when, text: Number.isNaN(ms) ? '' : timeAgo(ms) }),
            named ? ` · ${when}` : null
          ]),
          h('span', { class: 'hist-meta' }, [this.avatars(v.authors), h('span', { class: 'hist-counts', title: 'Characters inserted and deleted since the version before', text: counts(v) })])
        ])
      ]
    )
  }

  renderList () {
    const { list, more } = this.ui
    const versions = this.shown()
    // A refresh must not take the keyboard focus away from the item it was on.
    const focused = list.contains(document.activeElement) ? /** @type {HTMLElement} */ (document.activeElement).dataset.versionId : undefined
    if (list.dataset.state === 'error' && this.versions.length === 0) {
      list.replaceChildren()
    } else if (versions.length === 0 && list.dataset.state === 'ready') {
      list.replaceChildren(
        h('li', { class: 'hist-empty' }, [
          this.ui.namedOnly.checked && this.versions.length > 0
            ? 'No named versions among these. Name the current text to find it here later.'
            : 'No versions yet. Weft records one when editing pauses; you can also name the current text.'
        ])
      )
    } else {
      list.replaceChildren(...versions.map((v) => this.item(v)))
    }
    more.hidden = !this.hasMore
    this.markSelected()
    if (focused !== undefined) this.focusItem(focused)
  }

  /** Keeps aria-selected and the one tabbable item (roving tabindex) in step with `selected`. */
  markSelected () {
    const items = this.items()
    const current = items.find((li) => li.dataset.versionId === this.selected) ?? items[0]
    for (const li of items) {
      li.setAttribute('aria-selected', String(li.dataset.versionId === this.selected))
      li.tabIndex = li === current ? 0 : -1
    }
  }

  /** @returns {HTMLElement[]} */
  items () {
    return /** @type {HTMLElement[]} */ (Array.from(this.ui.list.querySelectorAll('li[data-version-id]')))
  }

  focusItem (id) {
    const items = this.items()
    const li = items.find((x) => x.dataset.versionId === id) ?? items[0]
    li?.focus()
  }

  // ---- one version --------------------------------------------------------------------------

  /** Shows version `id`: its text, highlighted against the version before it. */
  async select (id, { focus = false } = {}) {
    const v = this.versions.find((x) => String(x.id) === id)
    if (!v) return
    this.selected = id
    this.markSelected()
    this.ui.panel.dataset.view = 'version'
    // Narrow screens show the version instead of the list: focus goes to the way back.
    if (focus && this.narrow()) this.ui.back.focus()
    else if (focus) this.focusItem(id)
    this.renderView(v)
    const seq = ++this.viewSeq
    const { view, text } = this.ui
    view.dataset.state = 'loading'
    text.replaceChildren(h('span', { class: 'muted', text: 'Loading this version…' }))
    try {
      let nodes
      try {
        const diff = await this.api(this.versionPath(id, 'diff'))
        nodes = this.diffNodes(Array.isArray(diff.chunks) ? diff.chunks : [])
      } catch (e) {
        // The oldest version may have nothing before it to compare with: then its plain text.
        if (!(e instanceof ApiError) || (e.status !== 400 && e.status !== 404)) throw e
        nodes = [await this.api(this.versionPath(id, 'text'), { text: true })]
      }
      if (seq !== this.viewSeq) return
      text.replaceChildren(...nodes)
      view.dataset.state = 'ready'
    } catch (e) {
      if (seq !== this.viewSeq) return
      view.dataset.state = 'error'
      text.replaceChildren(h('span', { class: 'hist-failed', text: describe('Could not load this version', e) }))
    }
  }

  /** The diff's chunks as text, `<ins>` and `<del>`, each change in its author's colour. */
  diffNodes (chunks) {
    return chunks.map((c) => {
      const t = typeof c?.text === 'string' ? c.text : ''
      if (c?.op !== 'insert' && c?.op !== 'delete') return document.createTextNode(t)
      const author = typeof c.author === 'string' && c.author !== '' ? cleanName(c.author) : null
      const ins = c.op === 'insert'
      const el = h(ins ? 'ins' : 'del', {
        class: ins ? 'hist-ins' : 'hist-del',
        title: `${ins ? 'Inserted' : 'Deleted'}${author ? ` by ${author}` : ''}`,
        dataset: author ? { author } : {},
        text: t
      })
      const color = this.colorOf(author)
      el.style.setProperty('--author-color', color)
      // 8-digit hex: the author's colour at 18 % opacity, as for remote selections.
      el.style.setProperty('--author-bg', `${color}2e`)
      return el
    })
  }

  /** The heading, facts and buttons of the version view; `null` for "nothing selected". */
  renderView (v) {
    const { view, viewTitle, viewMeta, viewAuthors, restore, text } = this.ui
    if (v === null) {
      view.dataset.state = 'empty'
      delete view.dataset.versionId
      viewTitle.textContent = 'Version history'
      viewMeta.textContent = ''
      viewAuthors.replaceChildren()
      restore.hidden = true
      text.replaceChildren(h('span', { class: 'muted', text: 'Select a version to see its text and what changed in it.' }))
      return
    }
    const ms = timeOf(v)
    const when = Number.isNaN(ms) ? String(v.created_at ?? '') : fullTime(ms)
    const named = typeof v.name === 'string' && v.name !== ''
    view.dataset.versionId = String(v.id)
    viewTitle.textContent = named ? v.name : when
    viewMeta.textContent = `${named ? `${when} · ` : ''}${Number.isNaN(ms) ? '' : timeAgo(ms)} · ${counts(v)} characters since the version before`
    const names = Array.isArray(v.authors) ? v.authors.map((a) => cleanName(a)).filter(Boolean) : []
    viewAuthors.replaceChildren(
      ...names.map((n) => {
        const chip = h('li', { class: 'hist-author', dataset: { author: n } }, [this.avatar(n, 'avatar avatar-xs'), h('span', { text: n })])
        chip.style.setProperty('--user-color', this.colorOf(n))
        return chip
      })
    )
    restore.hidden = !this.canWrite
  }

  // ---- naming and restoring -----------------------------------------------------------------

  async saveName () {
    const { nameInput, nameForm } = this.ui
    const name = nameInput.value.replace(/\s+/g, ' ').trim()
    if (!name) {
      this.showError('Give the version a name first.')
      nameInput.focus()
      return
    }
    const submit = /** @type {HTMLButtonElement} */ (nameForm.querySelector('button[type=submit]'))
    submit.disabled = true
    try {
      const v = await this.api(this.base, { method: 'POST', body: { name } })
      nameForm.hidden = true
      this.ui.nameButton.hidden = !this.canWrite
      this.showError('')
      await this.load({ select: v && v.id != null ? String(v.id) : undefined })
      if (this.selected !== null) this.focusItem(this.selected)
    } catch (e) {
      this.showError(describe('Could not name this version', e))
    } finally {
      submit.disabled = false
    }
  }

  askRestore () {
    const v = this.versions.find((x) => String(x.id) === this.selected)
    if (!v || !this.canWrite) return
    const ms = timeOf(v)
    const label = typeof v.name === 'string' && v.name !== '' ? `“${v.name}”` : `the version from ${Number.isNaN(ms) ? v.created_at : fullTime(ms)}`
    this.ui.confirmText.textContent =
      `The document's text becomes the text of ${label}, for everyone editing it now. ` +
      'Nothing is lost: the current text stays in the history, and restoring it undoes this.'
    this.ui.confirmOk.disabled = false
    this.ui.confirm.showModal()
    this.ui.confirmCancel.focus()
  }

  async restore () {
    const id = this.selected
    const v = this.versions.find((x) => String(x.id) === id)
    if (id === null || !v) return
    this.ui.confirmOk.disabled = true
    try {
      await this.api(this.versionPath(id, 'restore'), { method: 'POST' })
      this.ui.confirm.close()
      const ms = timeOf(v)
      const label = typeof v.name === 'string' && v.name !== '' ? `“${v.name}”` : `the version from ${Number.isNaN(ms) ? v.created_at : fullTime(ms)}`
      this.close()
      this.onRestored(`Restored ${label}. Restoring the version before it undoes this.`)
    } catch (e) {
      this.ui.confirm.close()
      this.showError(describe('Could not restore this version', e))
    }
  }

  showError (text) {
    this.ui.error.textContent = text
    this.ui.error.hidden = text === ''
  }

  // ---- events -------------------------------------------------------------------------------

  wire () {
    const ui = this.ui
    ui.button.addEventListener('click', () => (this.isOpen ? this.close() : this.open()))
    ui.close.addEventListener('click', () => this.close())
    ui.namedOnly.addEventListener('change', () => this.renderList())
    ui.more.addEventListener('click', () => {
      this.limit += PAGE
      this.load()
    })
    ui.list.addEventListener('click', (e) => {
      const li = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest('li[data-version-id]'))
      if (li?.dataset.versionId) this.select(li.dataset.versionId, { focus: true })
    })
    ui.list.addEventListener('keydown', (e) => this.onListKey(e))
    ui.back.addEventListener('click', () => {
      ui.panel.dataset.view = 'list'
      this.focusItem(this.selected)
    })
    ui.nameButton.addEventListener('click', () => {
      ui.nameForm.hidden = false
      ui.nameButton.hidden = true
      ui.nameInput.value = ''
      ui.nameInput.focus()
    })
    const cancelName = () => {
      ui.nameForm.hidden = true
      ui.nameButton.hidden = !this.canWrite
      ui.nameButton.focus()
    }
    ui.nameCancel.addEventListener('click', cancelName)
    ui.nameForm.addEventListener('submit', (e) => {
      e.preventDefault()
      this.saveName()
    })
    ui.nameInput.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return
      // Escape here leaves naming, not the whole panel.
      e.preventDefault()
      e.stopPropagation()
      cancelName()
    })
    ui.restore.addEventListener('click', () => this.askRestore())
    ui.confirmCancel.addEventListener('click', () => ui.confirm.close())
    ui.confirmOk.addEventListener('click', () => this.restore())
    ui.confirm.addEventListener('close', () => {
      if (this.isOpen) ui.restore.focus()
    })
    document.addEventListener('keydown', (e) => {
      // The dialog closes itself on Escape (the keydown comes first, while it is still open).
      if (e.key === 'Escape' && this.isOpen && !ui.confirm.open && !e.defaultPrevented) this.close()
    })
    document.addEventListener('visibilitychange', () => {
      if (this.isOpen && document.visibilityState === 'visible') this.load()
    })
  }

  /**
   * Arrow keys, Home and End move through the timeline, Enter or Space shows the version. On wide
   * screens the selection follows the arrows; on narrow ones the version would cover the list.
   */
  onListKey (e) {
    const items = this.items()
    if (items.length === 0) return
    const at = items.indexOf(/** @type {HTMLElement} */ (document.activeElement))
    let next = -1
    if (e.key === 'ArrowDown') next = Math.min(items.length - 1, at + 1)
    else if (e.key === 'ArrowUp') next = Math.max(0, at - 1)
    else if (e.key === 'Home') next = 0
    else if (e.key === 'End') next = items.length - 1
    else if ((e.key === 'Enter' || e.key === ' ') && at >= 0) {
      e.preventDefault()
      this.select(items[at].dataset.versionId ?? '', { focus: true })
      return
    } else return
    e.preventDefault()
    const target = items[Math.max(0, next)]
    if (this.narrow()) {
      for (const li of items) li.tabIndex = li === target ? 0 : -1
      target.focus()
    } else {
      this.select(target.dataset.versionId ?? '', { focus: true })
    }
  }
}
