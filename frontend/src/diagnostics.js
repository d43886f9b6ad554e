// Records errors and warnings the page produces, so a bug report (or a browser test) can ask
// `window.__weftDiagnostics()` what went wrong without a devtools session. Imported first by
// every page so it is in place before anything else runs. Bounded: the oldest entries go.

const MAX_ENTRIES = 50

/** @type {Array<{level: string, message: string, at: number}>} */
const entries = []

const record = (level, parts) => {
  const message = parts
    .map((p) => {
      if (p instanceof Error) return `${p.name}: ${p.message}`
      if (typeof p === 'string') return p
      try {
        return JSON.stringify(p)
      } catch {
        return String(p)
      }
    })
    .join(' ')
  entries.push({ level, message, at: Date.now() })
  if (entries.length > MAX_ENTRIES) entries.shift()
}

for (const level of ['error', 'warn']) {
  const original = console[level].bind(console)
  console[level] = (...args) => {
    record(level, args)
    original(...args)
  }
}

window.addEventListener('error', (e) => record('error', [e.error ?? e.message]))
window.addEventListener('unhandledrejection', (e) => record('error', ['unhandled rejection:', e.reason]))
// The browser reports Content-Security-Policy violations on its console, not through
// console.error; this event is the page's only way to see them.
document.addEventListener('securitypolicyviolation', (e) => {
  // Parsing HTML in script (DOMPurify sanitising a document's Markdown) reports every event
  // handler attribute in it, though nothing runs and the sanitiser then removes it: the policy
  // doing its job on a document's content, not a fault of the page. Such a report names our
  // own bundle as its source; one from a page's HTML names the page, and is recorded.
  const source = new URL(e.sourceFile || location.href, location.href).pathname
  if (e.violatedDirective === 'script-src-attr' && /^\/assets\/[^/]+\.js$/.test(source)) return
  record('error', [`CSP blocked ${e.blockedURI || 'inline code'} (${e.violatedDirective})`])
})

/** Everything recorded so far (a copy). */
window.__weftDiagnostics = () => entries.slice()
