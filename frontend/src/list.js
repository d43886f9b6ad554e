// The document list, /: every document from `GET /api/docs` (most recently edited first), who is
// in it now, and a button that starts a new one.
//
// Hooks for tests: #docs[data-state="loading|ready|error"] > li[data-doc-id] > a,
// li[data-users], #new-doc.

import './diagnostics.js'
import './theme.js'

import { byId, docHref, fullTime, h, roomNameProblem, timeAgo, uuid } from './common.js'

/** How often the list refreshes itself while the tab is visible. */
const REFRESH_MS = 5000
const PAGE = 100

/**
 * An access token given to this page (`/?token=…`), for servers that require one: sent with the
 * API request as a bearer token and passed on to the documents opened from here.
 */
const token = new URLSearchParams(location.search).get('token')
const withToken = (href) => (token ? `${href}?token=${encodeURIComponent(token)}` : href)

const list = byId('docs')
const summary = byId('docs-summary')
const more = byId('more')

/** Documents shown, in order; `limit` grows with "Show more". */
let limit = PAGE
let timer = 0

const row = (d) => {
  const title = typeof d.title === 'string' && d.title.trim() ? d.title.trim() : null
  const users = Number(d.users) || 0
  return h('li', { class: 'doc', dataset: { docId: d.id, users: String(users) } }, [
    h('a', { href: withToken(docHref(d.id)), class: 'doc-link' }, [
      h('span', { class: 'doc-main' }, [
        h('span', { class: title ? 'doc-title' : 'doc-title muted', text: title ?? 'Untitled document' }),
        h('span', { class: 'doc-key', text: d.id })
      ]),
      h('span', { class: 'doc-meta' }, [
        users > 0
          ? h('span', { class: 'live', title: `${users} connected now` }, [h('span', { class: 'live-dot', 'aria-hidden': 'true' }), `${users} editing now`])
          : null,
        h('time', { datetime: new Date(d.updated_ms).toISOString(), title: `Last edited ${fullTime(d.updated_ms)}`, text: `Edited ${timeAgo(d.updated_ms)}` })
      ])
    ])
  ])
}

const load = async () => {
  clearTimeout(timer)
  try {
    const headers = { accept: 'application/json' }
    if (token) headers.authorization = `Bearer ${token}`
    const res = await fetch(`/api/docs?limit=${limit}`, { headers })
    if (res.status === 401 || res.status === 403) {
      const body = await res.json().catch(() => ({}))
      throw new Error(`the server requires an access link to list documents${body.message ? ` (${body.message})` : ''}`)
    }
    if (!res.ok) throw new Error(`the server answered ${res.status}`)
    const page = await res.json()
    const docs = Array.isArray(page.docs) ? page.docs : []
    list.dataset.state = 'ready'
    if (docs.length === 0) {
      list.replaceChildren(
        h('li', { class: 'empty' }, [
          h('strong', { text: 'No documents yet.' }),
          ' Start one with “New document”, then share its link: everyone who opens it edits the same text, live.'
        ])
      )
    } else {
      list.replaceChildren(...docs.map(row))
    }
    const total = Number(page.total) || docs.length
    const live = docs.reduce((n, d) => n + (Number(d.users) > 0 ? 1 : 0), 0)
    summary.textContent = total === 0 ? '' : `${total} ${total === 1 ? 'document' : 'documents'}${live ? ` · ${live} open now` : ''}`
    more.hidden = page.next_offset == null
  } catch (e) {
    list.dataset.state = 'error'
    list.replaceChildren(
      h('li', { class: 'empty error' }, [h('strong', { text: 'Could not load the documents. ' }), `${e instanceof Error ? e.message : e}. Retrying…`])
    )
  }
  if (document.visibilityState === 'visible') timer = setTimeout(load, REFRESH_MS)
}

byId('new-doc').addEventListener('click', () => {
  location.assign(withToken(docHref(uuid())))
})

more.addEventListener('click', () => {
  limit += PAGE
  load()
})

const openForm = /** @type {HTMLFormElement} */ (byId('open-form'))
const openName = /** @type {HTMLInputElement} */ (byId('open-name'))
const openError = byId('open-error')
openForm.addEventListener('submit', (e) => {
  e.preventDefault()
  const name = openName.value.trim()
  const problem = roomNameProblem(name)
  openError.textContent = problem ?? ''
  if (!problem) location.assign(withToken(docHref(name)))
})

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') load()
})

load()
