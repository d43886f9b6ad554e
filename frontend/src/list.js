// The document list, /: every document from `GET /api/docs` (most recently edited first), who is
// in it now, and a button that starts a new one. Documents can be renamed, deleted into the
// trash (a second view, with restore and delete forever), and created by importing .md/.txt
// files (the Import control, or files dropped on the page).
//
// Hooks for tests: #docs[data-state="loading|ready|error"][data-error=<code>] >
// li[data-doc-id] > a, li[data-users], .row-actions button[data-action="rename|delete"];
// #trash li[data-doc-id] button[data-action="restore|purge"]; #view-docs, #view-trash;
// #import-file; #list-status[data-kind]; #new-doc; #open-error; #search, and
// #results[data-state="idle|loading|ready|error"] > li[data-doc-id] with .snippet mark.

import './diagnostics.js'
import './theme.js'

import { byId, docHref, fullTime, h, roomNameProblem, timeAgo, uuid } from './common.js'

/** How often the list refreshes itself while the tab is visible. */
const REFRESH_MS = 5000
const PAGE = 100
/** Longest document name the server takes by default, in UTF-8 bytes (`--max-room-name`). */
const MAX_NAME_BYTES = 256
/** Largest file imported: well under the server's 16 MiB message limit. */
const MAX_IMPORT_BYTES = 4 * 1024 * 1024
/** Retries after a failure that may pass (the server is down), then the page stops trying. */
const MAX_RETRIES = 5

/**
 * An access token given to this page (`/?token=…`), for servers that require one: sent with the
 * API request as a bearer token and passed on to the documents opened from here.
 */
const token = new URLSearchParams(location.search).get('token')
const withToken = (href) => (token ? `${href}?token=${encodeURIComponent(token)}` : href)

const list = byId('docs')
const trashList = byId('trash')
const summary = byId('docs-summary')
const more = byId('more')
const status = byId('list-status')
const heading = byId('list-heading')

/** Documents shown, in order; `limit` grows with "Show more". */
let limit = PAGE
let timer = 0
let failures = 0
/** @type {'docs' | 'trash'} */
let view = 'docs'
/** A document being renamed: the list does not refresh under the field. */
let renaming = false
/** The server refused our access (no or a bad token): what to say instead of acting. */
let accessProblem = /** @type {string | null} */ (null)

/** A failed API call, with the server's stable code. */
class ApiFailure extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** Calls the API; a non-2xx answer throws an ApiFailure with the server's code and message. */
const api = async (method, path, body) => {
  /** @type {Record<string, string>} */
  const headers = { accept: 'application/json' }
  if (token) headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch {
    throw new ApiFailure(0, 'network', 'The server cannot be reached')
  }
  const json = await res.json().catch(() => ({}))
  if (!res.ok) throw new ApiFailure(res.status, json.code ?? `http_${res.status}`, json.message ?? `The server answered ${res.status}`)
  return json
}

/** What a refusal of access means for the person at the page, and what to do about it. */
const accessAdvice = (e) => {
  const ask = 'Open the link you were given (it ends with ?token=…), or ask an admin for one: they can make it with “weft token”.'
  switch (e.code) {
    case 'token_missing':
      return `This server needs an access token. ${ask}`
    case 'token_expired':
      return `Your access link has expired. ${ask}`
    case 'token_revoked':
      return `Your access link was revoked. ${ask}`
    case 'token_malformed':
    case 'token_bad_signature':
      return `Your access link is not valid for this server (it may be cut off or from another server). ${ask}`
    case 'token_wrong_document':
      return 'Your access link is for one document only, so it cannot list all documents. Open that document from the link you were given, or ask an admin for a link to every document.'
    case 'token_insufficient_role':
      return 'Your access link does not allow this (it may be read-only). Ask an admin for a link that allows editing.'
    default:
      return null
  }
}

/** Shows a message above the list; `kind` "error" for failures. Empty text hides it. */
const say = (text, kind = 'info', children = []) => {
  status.hidden = !text
  status.dataset.kind = kind
  status.replaceChildren(text, ...children)
}

/** A failed action: what went wrong and what to do, never a bare code. */
const failed = (what, e) => {
  const advice = e instanceof ApiFailure ? accessAdvice(e) : null
  say(`${what}: ${advice ?? (e instanceof Error ? e.message : String(e))}.`.replace(/\.\.$/, '.'), 'error')
}

const titleOf = (d) => (typeof d.title === 'string' && d.title.trim() ? d.title.trim() : null)

const row = (d) => {
  const title = titleOf(d)
  const users = Number(d.users) || 0
  const titleEl = h('span', { class: title ? 'doc-title' : 'doc-title muted', text: title ?? 'Untitled document' })
  const link = h('a', { href: withToken(docHref(d.id)), class: 'doc-link' }, [
    h('span', { class: 'doc-main' }, [titleEl, h('span', { class: 'doc-key', text: d.id })]),
    h('span', { class: 'doc-meta' }, [
      users > 0
        ? h('span', { class: 'live', title: `${users} connected now` }, [h('span', { class: 'live-dot', 'aria-hidden': 'true' }), `${users} editing now`])
        : null,
      h('time', { datetime: new Date(d.updated_ms).toISOString(), title: `Last edited ${fullTime(d.updated_ms)}`, text: `Edited ${timeAgo(d.updated_ms)}` })
    ])
  ])
  const li = h('li', { class: 'doc', dataset: { docId: d.id, users: String(users) } }, [link])
  li.append(
    h('span', { class: 'row-actions' }, [
      h('button', { class: 'btn btn-small', type: 'button', dataset: { action: 'rename' }, title: 'Rename', text: 'Rename', onclick: () => rename(li, link, title ?? '', d.id) }),
      h('button', { class: 'btn btn-small btn-danger', type: 'button', dataset: { action: 'delete' }, title: 'Move to the trash', text: 'Delete', onclick: () => trash(d.id, title) })
    ])
  )
  return li
}

/** Replaces a row's link with a field: Enter saves, Escape (or leaving the field) cancels. */
const rename = (li, link, before, id) => {
  renaming = true
  clearTimeout(timer)
  const input = /** @type {HTMLInputElement} */ (h('input', { class: 'rename-input', type: 'text', maxlength: '200', value: before, 'aria-label': `New title for ${id}` }))
  let done = false
  const finish = async (save) => {
    if (done) return
    done = true
    const title = input.value.trim()
    input.replaceWith(link)
    renaming = false
    if (save && !title) {
      say('A title cannot be empty; the old one is kept.', 'error')
    } else if (save && title !== before) {
      try {
        await api('PATCH', `/api/docs/${encodeURIComponent(id)}`, { title })
        say(`Renamed to “${title}”.`)
      } catch (e) {
        failed('Could not rename', e)
      }
    }
    load()
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
  input.addEventListener('blur', () => finish(false))
  link.replaceWith(input)
  input.focus()
  input.select()
}

/** Moves a document to the trash, with a way back. */
const trash = async (id, title) => {
  try {
    await api('DELETE', `/api/docs/${encodeURIComponent(id)}`)
    say(`Moved “${title ?? id}” to the trash. `, 'info', [
      h('button', { class: 'link-button', type: 'button', dataset: { action: 'undo' }, text: 'Undo', onclick: () => restore(id, title) })
    ])
  } catch (e) {
    failed('Could not delete', e)
  }
  load()
}

const restore = async (id, title) => {
  try {
    await api('POST', `/api/docs/${encodeURIComponent(id)}/restore`)
    say(`Restored “${title ?? id}”. `, 'info', [h('a', { href: withToken(docHref(id)), text: 'Open it' })])
  } catch (e) {
    failed('Could not restore', e)
  }
  load()
}

const purge = async (id, title) => {
  if (!confirm(`Delete “${title ?? id}” forever? Its text and history cannot be brought back.`)) return
  try {
    await api('DELETE', `/api/trash/${encodeURIComponent(id)}`)
    say(`Deleted “${title ?? id}” forever.`)
  } catch (e) {
    failed('Could not delete forever', e)
  }
  load()
}

const trashRow = (d) => {
  const title = titleOf(d)
  return h('li', { class: 'doc', dataset: { docId: d.id } }, [
    h('span', { class: 'doc-main' }, [
      h('span', { class: title ? 'doc-title' : 'doc-title muted', text: title ?? 'Untitled document' }),
      h('span', { class: 'doc-key', text: `${d.id} · deleted ${timeAgo(d.deleted_ms)} · deleted for good on ${fullTime(d.purge_ms)}` })
    ]),
    h('span', { class: 'row-actions' }, [
      h('button', { class: 'btn btn-small', type: 'button', dataset: { action: 'restore' }, text: 'Restore', onclick: () => restore(d.id, title) }),
      h('button', { class: 'btn btn-small btn-danger', type: 'button', dataset: { action: 'purge' }, text: 'Delete forever', onclick: () => purge(d.id, title) })
    ])
  ])
}

const empty = (strong, rest) => h('li', { class: 'empty' }, [h('strong', { text: strong }), rest])

const showDocs = (page) => {
  const docs = Array.isArray(page.docs) ? page.docs : []
  list.replaceChildren(
    ...(docs.length
      ? docs.map(row)
      : [empty('No documents yet.', ' Start one with “New document” or import a file, then share its link: everyone who opens it edits the same text, live.')])
  )
  const total = Number(page.total) || docs.length
  const live = docs.reduce((n, d) => n + (Number(d.users) > 0 ? 1 : 0), 0)
  summary.textContent = total === 0 ? '' : `${total} ${total === 1 ? 'document' : 'documents'}${live ? ` · ${live} open now` : ''}`
  more.hidden = page.next_offset == null
}

const showTrash = (page) => {
  const docs = Array.isArray(page.docs) ? page.docs : []
  trashList.replaceChildren(
    ...(docs.length ? docs.map(trashRow) : [empty('The trash is empty.', ' Deleted documents stay here for 30 days, then they are deleted for good.')])
  )
  summary.textContent = docs.length ? `${docs.length} in the trash` : ''
  more.hidden = true
}

// ---- search ----------------------------------------------------------------------------------

const searchBox = /** @type {HTMLInputElement} */ (byId('search'))
const results = byId('results')
let searchTimer = 0
let searchSeq = 0

/** The snippet with its matched ranges (UTF-16 offsets from the server) in <mark>, as text. */
const snippetOf = (hit) => {
  const text = typeof hit.snippet === 'string' ? hit.snippet : ''
  const parts = []
  let at = 0
  for (const [start, end] of Array.isArray(hit.highlights) ? hit.highlights : []) {
    if (start < at || end <= start || end > text.length) continue
    parts.push(text.slice(at, start), h('mark', { text: text.slice(start, end) }))
    at = end
  }
  parts.push(text.slice(at))
  return h('span', { class: 'snippet' }, parts)
}

const resultRow = (hit) =>
  h('li', { class: 'doc', dataset: { docId: hit.id } }, [
    h('a', { href: withToken(docHref(hit.id)), class: 'doc-link' }, [
      h('span', { class: 'doc-main' }, [
        h('span', { class: hit.title ? 'doc-title' : 'doc-title muted', text: hit.title || 'Untitled document' }),
        hit.snippet ? snippetOf(hit) : h('span', { class: 'doc-key', text: hit.id })
      ])
    ])
  ])

/** Runs the search box's query; an empty box shows the list again. */
const runSearch = async () => {
  const q = searchBox.value.trim()
  const seq = ++searchSeq
  const searching = q !== '' && view === 'docs'
  results.hidden = !searching
  list.hidden = searching || view !== 'docs'
  more.hidden = searching || more.hidden
  if (!searching) {
    results.dataset.state = 'idle'
    return
  }
  results.dataset.state = 'loading'
  try {
    const page = await api('GET', `/api/search?q=${encodeURIComponent(q)}&limit=50`)
    if (seq !== searchSeq) return
    const hits = Array.isArray(page.hits) ? page.hits : []
    results.replaceChildren(...(hits.length ? hits.map(resultRow) : [empty('Nothing found.', ` No title or text matches “${q}”.`)]))
    results.dataset.state = 'ready'
    summary.textContent = `${hits.length} ${hits.length === 1 ? 'match' : 'matches'}`
  } catch (e) {
    if (seq !== searchSeq) return
    results.dataset.state = 'error'
    const advice = e instanceof ApiFailure ? accessAdvice(e) : null
    results.replaceChildren(h('li', { class: 'empty error' }, [h('strong', { text: 'Search failed. ' }), advice ?? (e instanceof Error ? e.message : String(e))]))
  }
}

searchBox.addEventListener('input', () => {
  clearTimeout(searchTimer)
  searchTimer = setTimeout(runSearch, 250)
})
searchBox.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    searchBox.value = ''
    runSearch()
  }
})

const load = async () => {
  clearTimeout(timer)
  if (renaming) return
  if (view === 'docs' && searchBox.value.trim()) {
    // The results stay as they are while someone reads them; the list refreshes after.
    timer = setTimeout(load, REFRESH_MS)
    return
  }
  const target = view === 'docs' ? list : trashList
  try {
    const page = view === 'docs' ? await api('GET', `/api/docs?limit=${limit}`) : await api('GET', '/api/trash')
    failures = 0
    accessProblem = null
    target.dataset.state = 'ready'
    delete target.dataset.error
    if (view === 'docs') showDocs(page)
    else showTrash(page)
  } catch (e) {
    const advice = e instanceof ApiFailure ? accessAdvice(e) : null
    target.dataset.state = 'error'
    target.dataset.error = e instanceof ApiFailure ? e.code : 'unknown'
    summary.textContent = ''
    more.hidden = true
    if (advice) {
      // Retrying cannot help: the same request gets the same answer until the link changes.
      accessProblem = advice
      target.replaceChildren(h('li', { class: 'empty error' }, [h('strong', { text: 'You cannot see the documents. ' }), advice]))
      return
    }
    failures += 1
    const why = e instanceof Error ? e.message : String(e)
    const again = failures <= MAX_RETRIES
    target.replaceChildren(
      h('li', { class: 'empty error' }, [
        h('strong', { text: 'Could not load the documents. ' }),
        `${why}. `,
        again
          ? `Trying again in ${Math.round((REFRESH_MS * failures) / 1000)} s…`
          : h('button', { class: 'link-button', type: 'button', text: 'Try again', onclick: () => { failures = 0; load() } })
      ])
    )
    if (again && document.visibilityState === 'visible') timer = setTimeout(load, REFRESH_MS * failures)
    return
  }
  if (document.visibilityState === 'visible') timer = setTimeout(load, REFRESH_MS)
}

const setView = (next) => {
  view = next
  byId('view-docs').setAttribute('aria-pressed', String(next === 'docs'))
  byId('view-trash').setAttribute('aria-pressed', String(next === 'trash'))
  list.hidden = next !== 'docs'
  trashList.hidden = next !== 'trash'
  searchBox.value = ''
  searchBox.parentElement.hidden = next !== 'docs'
  runSearch()
  heading.textContent = next === 'docs' ? 'Documents' : 'Trash'
  say('')
  load()
}
byId('view-docs').addEventListener('click', () => setView('docs'))
byId('view-trash').addEventListener('click', () => setView('trash'))

byId('new-doc').addEventListener('click', () => {
  if (accessProblem) {
    say(accessProblem, 'error')
    return
  }
  location.assign(withToken(docHref(uuid())))
})

more.addEventListener('click', () => {
  limit += PAGE
  load()
})

// ---- import ----------------------------------------------------------------------------------

/** The title a file gives its document: its name without the extension. */
const fileTitle = (name) => name.replace(/\.(md|markdown|txt)$/i, '').trim().slice(0, 200) || 'Imported document'

/**
 * Imports one file as a new document holding exactly its text: the bytes are decoded as UTF-8
 * with nothing added or taken away (a byte-order mark stays in the text, so an export gives back
 * the same bytes). Other types, files over 4 MiB and bytes that are not UTF-8 are refused.
 */
const importFile = async (file) => {
  if (!/\.(md|markdown|txt)$/i.test(file.name)) {
    throw new Error(`“${file.name}” is not a .md or .txt file; only Markdown and plain text can be imported`)
  }
  if (file.size > MAX_IMPORT_BYTES) {
    throw new Error(`“${file.name}” is ${(file.size / 1048576).toFixed(1)} MiB; files up to 4 MiB can be imported`)
  }
  let text
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(await file.arrayBuffer())
  } catch {
    throw new Error(`“${file.name}” is not UTF-8 text`)
  }
  const created = await api('POST', '/api/docs', { text, title: fileTitle(file.name) })
  return created.id
}

const importFiles = async (files) => {
  if (accessProblem) {
    say(accessProblem, 'error')
    return
  }
  const done = []
  const problems = []
  for (const file of files) {
    try {
      done.push({ id: await importFile(file), title: fileTitle(file.name) })
    } catch (e) {
      const advice = e instanceof ApiFailure ? accessAdvice(e) : null
      problems.push(advice ?? (e instanceof Error ? e.message : String(e)))
    }
  }
  if (view !== 'docs') setView('docs')
  if (problems.length) {
    say(`Could not import: ${problems.join('; ')}.`, 'error')
  } else if (done.length === 1) {
    say(`Imported “${done[0].title}” as a new document. `, 'info', [h('a', { href: withToken(docHref(done[0].id)), text: 'Open it' })])
  } else if (done.length) {
    say(`Imported ${done.length} documents.`)
  }
  load()
}

const fileInput = /** @type {HTMLInputElement} */ (byId('import-file'))
fileInput.addEventListener('change', () => {
  const files = Array.from(fileInput.files ?? [])
  fileInput.value = ''
  if (files.length) importFiles(files)
})

const zone = byId('drop-zone')
const hasFiles = (e) => Array.from(e.dataTransfer?.types ?? []).includes('Files')
zone.addEventListener('dragover', (e) => {
  if (!hasFiles(e)) return
  e.preventDefault()
  document.body.classList.add('dragging')
})
zone.addEventListener('dragleave', () => document.body.classList.remove('dragging'))
zone.addEventListener('drop', (e) => {
  if (!hasFiles(e)) return
  e.preventDefault()
  document.body.classList.remove('dragging')
  importFiles(Array.from(e.dataTransfer?.files ?? []))
})

// ---- open or create by name ------------------------------------------------------------------

const openForm = /** @type {HTMLFormElement} */ (byId('open-form'))
const openName = /** @type {HTMLInputElement} */ (byId('open-name'))
const openError = byId('open-error')

/** Why the page cannot open `name`, beyond the server's rules: names a URL cannot carry. */
const openProblem = (name) => {
  if (name === '.' || name === '..') return `“${name}” cannot be used as a document name: browsers read it as a folder of the address.`
  const bytes = new TextEncoder().encode(name).length
  if (bytes > MAX_NAME_BYTES) return `The document name is too long: ${bytes} bytes, at most ${MAX_NAME_BYTES}.`
  return roomNameProblem(name)
}

openForm.addEventListener('submit', (e) => {
  e.preventDefault()
  const name = openName.value.trim()
  const problem = openProblem(name)
  openError.textContent = problem ?? ''
  if (problem) return
  if (accessProblem) {
    openError.textContent = accessProblem
    return
  }
  location.assign(withToken(docHref(name)))
})

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && !accessProblem) load()
})

load()
