// Exporting the document as a file: `.md` and `.txt` are the document's text byte for byte
// (UTF-8, no byte-order mark, no newline added), `.html` a standalone page with the title and
// the rendered, sanitised Markdown and a small stylesheet of its own.
//
// Hooks for tests: #export-button, #export-menu [data-format="md|txt|html"].

import { byId } from './common.js'
import { renderMarkdown } from './markdown.js'

/** Escapes text for an HTML text node or attribute. */
const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])

const PAGE_STYLE = `body{font:17px/1.7 Georgia,Cambria,'Times New Roman',serif;color:#1f2937;max-width:760px;margin:40px auto;padding:0 20px}
pre,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}pre{background:#f3f4f6;padding:12px;border-radius:6px;overflow:auto}
blockquote{border-left:3px solid #d1d5db;margin:0;padding-left:16px;color:#4b5563}img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #d1d5db;padding:4px 8px}
@media (prefers-color-scheme:dark){body{background:#111827;color:#e5e7eb}pre{background:#1f2937}a{color:#a5b4fc}}`

/**
 * A standalone HTML page of the document.
 * @param {string} text the document's Markdown
 * @param {string} title the page title
 */
export const htmlPage = (text, title) =>
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${PAGE_STYLE}</style>
</head>
<body>
<article>
${renderMarkdown(text)}
</article>
</body>
</html>
`

/** A file name from the title: letters, digits and dashes, never empty. */
export const fileNameFor = (title, ext) => {
  const base = title
    .replace(/[^\p{L}\p{N}]+/gu, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 80)
  return `${base || 'document'}.${ext}`
}

const TYPES = { md: 'text/markdown;charset=utf-8', txt: 'text/plain;charset=utf-8', html: 'text/html;charset=utf-8' }

/**
 * Builds the file of `format` and hands it to the browser as a download.
 * @param {'md' | 'txt' | 'html'} format
 * @param {string} text the document's text
 * @param {string} title for the file name and the HTML title
 */
export const download = (format, text, title) => {
  // A Blob of a JS string is its UTF-8 encoding, without a byte-order mark.
  const body = format === 'html' ? htmlPage(text, title) : text
  const blob = new Blob([body], { type: TYPES[format] })
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = fileNameFor(title, format)
  a.hidden = true
  document.body.append(a)
  a.click()
  a.remove()
  // The download has its own reference by now; a late revoke keeps slow browsers safe.
  setTimeout(() => URL.revokeObjectURL(url), 60_000)
}

/**
 * Wires the header's export menu.
 * @param {() => {text: string, title: string}} current the document's text and title now
 */
export const setupExport = (current) => {
  const button = byId('export-button')
  const menu = byId('export-menu')
  const close = () => {
    menu.hidden = true
    button.setAttribute('aria-expanded', 'false')
  }
  button.addEventListener('click', () => {
    menu.hidden = !menu.hidden
    button.setAttribute('aria-expanded', String(!menu.hidden))
    if (!menu.hidden) /** @type {HTMLElement | null} */ (menu.querySelector('button'))?.focus()
  })
  menu.addEventListener('click', (e) => {
    const item = /** @type {HTMLElement} */ (e.target).closest('[data-format]')
    if (!(item instanceof HTMLElement)) return
    const { text, title } = current()
    download(/** @type {'md' | 'txt' | 'html'} */ (item.dataset.format), text, title)
    close()
  })
  menu.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      close()
      button.focus()
    }
  })
  document.addEventListener('mousedown', (e) => {
    const t = /** @type {Node} */ (e.target)
    if (!menu.hidden && !menu.contains(t) && !button.contains(t)) close()
  })
  return { open: () => button.click() }
}
