// The document's title in the editor's header and the browser tab: the title given to the
// document (through the list page, this header or `PATCH /api/docs/{id}`), else its first line.
//
// Click the title (or focus it and press Enter) to rename: Enter saves, Escape cancels, leaving
// the field saves. Other tabs learn of a rename at once from the server's `title` control
// message, and read the title again whenever they become visible (covering a rename made while
// they were disconnected).
//
// Hooks for tests: #doc-title[data-title-source="given|text"], input#doc-title-input.

import { h } from './common.js'

export class DocTitle {
  /**
   * @param {object} o
   * @param {HTMLElement} o.el the header's title element
   * @param {string} o.docId
   * @param {string | null} o.token access token for the API, if the page has one
   * @param {() => string | null} o.fallback the title when none was given (the first line)
   * @param {() => boolean} o.canRename whether this viewer may rename (write access)
   * @param {(message: string) => void} o.onError
   */
  constructor ({ el, docId, token, fallback, canRename, onError }) {
    this.el = el
    this.docId = docId
    this.token = token
    this.fallback = fallback
    this.canRename = canRename
    this.onError = onError
    /** The title given to the document, or null when it follows the first line. */
    this.given = /** @type {string | null} */ (null)
    this.editing = false
    el.tabIndex = 0
    el.addEventListener('click', () => this.edit())
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault()
        this.edit()
      }
    })
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.refresh()
    })
    this.refresh()
  }

  /** Request headers for the API. */
  headers (json = false) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' }
    if (json) headers['content-type'] = 'application/json'
    if (this.token) headers.authorization = `Bearer ${this.token}`
    return headers
  }

  /** Reads the given title from the server; a document not created yet has none. */
  async refresh () {
    try {
      const res = await fetch(`/api/docs/${encodeURIComponent(this.docId)}`, { headers: this.headers() })
      if (!res.ok) return
      const meta = await res.json()
      this.set(meta.title_pinned && typeof meta.title === 'string' ? meta.title : null)
    } catch {
      // Offline: keep what is shown; the next visibility change tries again.
    }
  }

  /** The server says the document is now called `title` (null: it follows the first line). */
  set (title) {
    this.given = title && title.trim() ? title.trim() : null
    this.render()
  }

  /** Shows the title in the header and the tab. */
  render () {
    const title = this.given ?? this.fallback()
    if (!this.editing) {
      this.el.textContent = title ?? 'Untitled document'
      this.el.classList.toggle('muted', title === null)
      this.el.dataset.titleSource = this.given ? 'given' : 'text'
      this.el.title = this.canRename() ? 'Rename this document' : ''
    }
    document.title = `${title ?? this.docId} · Weft`
  }

  /** Replaces the title with a field to rename it. */
  edit () {
    if (this.editing || !this.canRename()) return
    this.editing = true
    const before = this.given ?? this.fallback() ?? ''
    const input = /** @type {HTMLInputElement} */ (h('input', {
      id: 'doc-title-input',
      class: 'title-input',
      type: 'text',
      maxlength: '200',
      'aria-label': 'Document title',
      value: before
    }))
    let done = false
    const finish = async (save) => {
      if (done) return
      done = true
      const title = input.value.trim()
      this.editing = false
      input.replaceWith(this.el)
      if (save && title && title !== before) await this.save(title)
      else if (save && !title) this.onError('A title cannot be empty; the old one is kept.')
      this.render()
      this.el.focus()
    }
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault()
        finish(true)
      } else if (e.key === 'Escape') {
        e.preventDefault()
        finish(false)
      }
    })
    input.addEventListener('blur', () => finish(true))
    this.el.replaceWith(input)
    input.focus()
    input.select()
  }

  /** Sends a rename; the header shows it at once and goes back if the server refuses. */
  async save (title) {
    const previous = this.given
    this.given = title
    this.render()
    try {
      const res = await fetch(`/api/docs/${encodeURIComponent(this.docId)}`, {
        method: 'PATCH',
        headers: this.headers(true),
        body: JSON.stringify({ title })
      })
      const body = await res.json().catch(() => ({}))
      if (!res.ok) {
        this.given = previous
        const why = res.status === 404
          ? 'the document is not saved on the server yet; type something first'
          : body.message ?? `the server answered ${res.status}`
        this.onError(`Could not rename: ${why}.`)
      } else {
        this.given = typeof body.title === 'string' ? body.title : title
      }
    } catch {
      this.given = previous
      this.onError('Could not rename: the server cannot be reached.')
    }
    this.render()
  }
}
