// Markdown in the editor and out of it: the CodeMirror extensions that highlight Markdown syntax
// (colours from CSS variables, so one highlight style serves the light and the dark theme), and
// the renderer the preview pane and the HTML export share: marked (GitHub-flavoured Markdown) for
// the HTML, DOMPurify to sanitise it. The document's text is written by anyone holding a link,
// so every rendered string goes through the sanitiser before it reaches the DOM or a file.

import { HighlightStyle, LanguageSupport, syntaxHighlighting } from '@codemirror/language'
import { markdownLanguage } from '@codemirror/lang-markdown'
import { tags as t } from '@lezer/highlight'
import { Marked } from 'marked'
import DOMPurify from 'dompurify'

/**
 * Colours of Markdown syntax. Values are CSS variables defined in markdown.css for both themes.
 * Headings keep the text's size (a collaborative editor's lines should not jump as someone
 * types a `#`), only weight and colour change.
 */
const markdownHighlight = HighlightStyle.define([
  { tag: t.heading, fontWeight: '700', color: 'var(--md-heading)' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strikethrough, textDecoration: 'line-through' },
  { tag: t.link, color: 'var(--md-link)', textDecoration: 'underline' },
  { tag: t.url, color: 'var(--md-url)' },
  { tag: t.monospace, fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', fontSize: '0.9em', color: 'var(--md-code)' },
  { tag: t.quote, color: 'var(--md-quote)', fontStyle: 'italic' },
  { tag: [t.processingInstruction, t.contentSeparator, t.meta], color: 'var(--md-mark)' },
  { tag: t.list, color: 'var(--md-mark)' },
  { tag: [t.angleBracket, t.tagName, t.attributeName, t.attributeValue], color: 'var(--md-html)' },
  { tag: t.comment, color: 'var(--muted)' }
])

/**
 * The editor's Markdown support: GitHub-flavoured Markdown syntax tree and its highlighting.
 * Only the language itself, not `markdown()`: that would also bundle the HTML, CSS and
 * JavaScript languages for embedded code, tripling the editor bundle.
 */
export const markdownSupport = () => [new LanguageSupport(markdownLanguage), syntaxHighlighting(markdownHighlight)]

const marked = new Marked({ gfm: true, breaks: false, async: false })

const purify = DOMPurify(window)
// Links in rendered Markdown open in a new tab, without giving it a handle on this page.
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer')
  }
})

/** What the sanitiser lets through: DOMPurify's HTML profile without styles or forms. */
const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
  FORBID_ATTR: ['style']
}

/**
 * The document's Markdown as sanitised HTML: no script, no event handler attribute, no
 * `javascript:` URL survives.
 * @param {string} text
 * @returns {string}
 */
export const renderMarkdown = (text) => {
  const html = /** @type {string} */ (marked.parse(text))
  return /** @type {string} */ (purify.sanitize(html, PURIFY_CONFIG))
}
