// The live Markdown preview beside the editor (below it on narrow screens): the document's text
// rendered by `renderMarkdown` (sanitised), re-rendered a moment after anyone's edit, so a burst
// of typing costs one render. Whether it is open is kept in this browser.
//
// Hooks for tests (stable; change them together with tests/tests/browser_markdown.rs):
//   #preview-button[aria-pressed], body[data-preview="on|off"],
//   #preview[data-rendered-length] (the length of the text last rendered), #preview-body

import { byId } from './common.js'
import { renderMarkdown } from './markdown.js'

/** Edits within this long of each other are rendered once. */
const DEBOUNCE_MS = 150
const STORAGE_KEY = 'weft.preview'

export class Preview {
  /**
   * @param {object} o
   * @param {import('yjs').Text} o.ytext the document's text
   */
  constructor ({ ytext }) {
    this.ytext = ytext
    this.button = byId('preview-button')
    this.pane = byId('preview')
    this.body = byId('preview-body')
    this.timer = 0
    this.dirty = true
    ytext.observe(() => this.schedule())
    this.button.addEventListener('click', () => this.toggle())
    let stored = null
    try {
      stored = localStorage.getItem(STORAGE_KEY)
    } catch {}
    this.set(stored === 'on')
  }

  /** Whether the pane is showing. */
  get isOpen () {
    return document.body.dataset.preview === 'on'
  }

  /** Opens or closes the pane, and remembers the choice. */
  toggle () {
    this.set(!this.isOpen)
    try {
      localStorage.setItem(STORAGE_KEY, this.isOpen ? 'on' : 'off')
    } catch {}
  }

  /** @param {boolean} on */
  set (on) {
    document.body.dataset.preview = on ? 'on' : 'off'
    this.button.setAttribute('aria-pressed', String(on))
    this.pane.hidden = !on
    if (on && this.dirty) this.render()
  }

  /** Renders after the edits stop for a moment; nothing while the pane is closed. */
  schedule () {
    this.dirty = true
    if (!this.isOpen) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.render(), DEBOUNCE_MS)
  }

  render () {
    clearTimeout(this.timer)
    const text = this.ytext.toString()
    // Sanitised by renderMarkdown: the only way document text reaches innerHTML.
    this.body.innerHTML = renderMarkdown(text)
    this.pane.dataset.renderedLength = String(text.length)
    this.dirty = false
  }
}
