// The editor page, /d/{id}: CodeMirror 6 bound to the document's Y.Text `content` through
// y-codemirror.next, with presence, typing hints, connection and save status.
//
// Hooks for tests and tools (stable; change them together with tests/tests/browser.rs):
//   #status[data-status="connected|connecting|offline"][data-synced="true|false"]
//   #saved[data-saved="true|false"][data-save-state="loading|saved|saving|unsaved|synced"]
//   #presence[data-count] > li[data-user-name][data-self]
//   body[data-readonly="true|false"], #typing, #banner[data-kind]
// and the History panel's, listed in history.js.

import './diagnostics.js'

import * as Y from 'yjs'
import { Compartment, EditorState, Prec } from '@codemirror/state'
import { EditorView, drawSelection, dropCursor, highlightSpecialChars, keymap, placeholder } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { search, searchKeymap } from '@codemirror/search'
import { YSyncConfig, yCollab, yRemoteSelections, yRemoteSelectionsTheme, ySyncFacet, yUndoManagerKeymap } from 'y-codemirror.next'

import { byId, h, roomNameProblem } from './common.js'
import { Connection } from './connection.js'
import { HistoryPanel } from './history.js'
import { DocTitle } from './doctitle.js'
import { PALETTE, cleanName, initials, isColor, loadIdentity, saveIdentity, MAX_NAME } from './identity.js'

/** The document id from `/d/{id}`; null when the path is not an editor path. */
const docIdFromPath = () => {
  const m = /^\/d\/([^/]+)\/?$/.exec(location.pathname)
  if (!m) return null
  try {
    return decodeURIComponent(m[1])
  } catch {
    return null
  }
}

/** Shows a full-page error instead of the editor. */
const fail = (title, text) => {
  document.body.dataset.error = 'true'
  byId('editor').replaceWith(
    h('section', { class: 'page-error', role: 'alert' }, [
      h('h2', { text: title }),
      h('p', { text }),
      h('p', {}, [h('a', { class: 'btn btn-primary', href: '/', text: 'Back to all documents' })])
    ])
  )
  const status = byId('status')
  status.dataset.status = 'offline'
  byId('status-text').textContent = 'Not connected'
}

// ---------------------------------------------------------------------------------------------
// Small UI pieces

let toastTimer = 0
/** A short message at the bottom of the screen. */
const toast = (text, level = 'info') => {
  const el = byId('toast')
  el.textContent = text
  el.dataset.level = level
  el.hidden = false
  clearTimeout(toastTimer)
  toastTimer = setTimeout(() => { el.hidden = true }, level === 'error' ? 8000 : 3000)
}

const copyText = async (text) => {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text)
    return
  }
  // Plain-http servers on a LAN are not a secure context: no Clipboard API there.
  const area = h('textarea', { class: 'offscreen', readonly: true })
  area.value = text
  document.body.append(area)
  area.select()
  const ok = document.execCommand('copy')
  area.remove()
  if (!ok) throw new Error('copy refused')
}

/** The first non-empty line of the text, as the document's title. */
const titleOf = (text) => {
  for (const line of text.split('\n', 50)) {
    const t = line.trim()
    if (t) return t.length > 80 ? `${t.slice(0, 79)}…` : t
  }
  return null
}

/** A connection lost for less than this (a server restart, a network blip) gets no banner. */
const BANNER_DELAY_MS = 2000
/** Attempts in a row that never opened a socket before the page says it cannot get in. */
const REFUSED_AFTER_ATTEMPTS = 4

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`

// ---------------------------------------------------------------------------------------------

const main = () => {
  const docId = docIdFromPath()
  if (docId === null) {
    fail('Not a document address', 'Document addresses look like /d/<name>.')
    return
  }
  const problem = roomNameProblem(docId)
  if (problem) {
    fail('This document cannot be opened', problem)
    return
  }
  const params = new URLSearchParams(location.search)
  const token = params.get('token')

  let identity = loadIdentity()
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')

  const ui = {
    status: byId('status'),
    statusText: byId('status-text'),
    retry: byId('retry'),
    saved: byId('saved'),
    presence: byId('presence'),
    userCount: byId('user-count'),
    typing: byId('typing'),
    banner: byId('banner'),
    title: byId('doc-title'),
    docId: byId('doc-id'),
    stats: byId('stats')
  }
  ui.docId.textContent = docId
  ui.docId.title = docId

  /** @type {DocTitle | null} */
  let docTitle = null
  const conn = new Connection({
    docId,
    ydoc,
    identity,
    token,
    onChange: () => render(),
    onNotice: (level, text) => toast(text, level),
    onTitle: (title) => docTitle?.set(title)
  })
  docTitle = new DocTitle({
    el: ui.title,
    docId,
    token,
    fallback: () => titleOf(ytext.toString()),
    canRename: () => conn.state.role !== 'read',
    onError: (message) => toast(message, 'error')
  })

  // ---- the editor --------------------------------------------------------------------------
  const editable = new Compartment()
  const hint = new Compartment()
  const carets = new Compartment()
  const undoManager = new Y.UndoManager(ytext)
  const view = new EditorView({
    parent: byId('editor'),
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([...yUndoManagerKeymap, ...searchKeymap, ...defaultKeymap]),
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        search({ top: true }),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ 'aria-label': 'Document text', spellcheck: 'true', autocorrect: 'on', autocapitalize: 'sentences' }),
        editable.of([]),
        hint.of(placeholder('Loading…')),
        // Text sync and undo from yCollab; remote carets added separately, in a compartment, so
        // they can be redrawn when someone renames: y-codemirror.next 0.3.6 compares caret
        // widgets by colour only and would keep showing the old name.
        yCollab(ytext, null, { undoManager }),
        Prec.lowest(ySyncFacet.of(new YSyncConfig(ytext, conn.awareness))),
        yRemoteSelectionsTheme,
        carets.of(yRemoteSelections),
        EditorView.theme({
          // Remote name labels stay visible (y-codemirror.next shows them only on hover).
          '.cm-ySelectionInfo': {
            opacity: '1',
            fontFamily: 'var(--font-ui)',
            fontSize: '11px',
            fontWeight: '600',
            lineHeight: '1.4',
            padding: '0 5px',
            borderRadius: '4px 4px 4px 0',
            top: '-1.5em',
            left: '-2px'
          },
          '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0' },
          '.cm-ySelectionCaretDot': { display: 'none' }
        })
      ]
    })
  })

  const historyPanel = new HistoryPanel({
    docId,
    token,
    awareness: conn.awareness,
    // Back to live editing, where the caret was.
    onClose: () => view.focus(),
    onRestored: (text) => toast(text)
  })

  let readOnly = null
  const setReadOnly = (ro) => {
    if (readOnly === ro) return
    readOnly = ro
    view.dispatch({ effects: editable.reconfigure(ro ? [EditorState.readOnly.of(true), EditorView.editable.of(false)] : []) })
    document.body.dataset.readonly = String(ro)
    historyPanel.setCanWrite(!ro)
  }
  setReadOnly(false)

  let placeholderText = 'Loading…'
  const setPlaceholder = (text) => {
    if (placeholderText === text) return
    placeholderText = text
    view.dispatch({ effects: hint.reconfigure(placeholder(text)) })
  }

  // ---- rendering -----------------------------------------------------------------------------
  let retryTicker = 0
  const renderStatus = () => {
    const s = conn.state
    let status = s.status
    let text
    let retry = false
    if (s.refused) {
      status = 'offline'
      text = 'Disconnected'
      retry = true
    } else if (!s.online) {
      status = 'offline'
      text = 'Offline'
    } else if (s.status === 'connected') {
      text = s.synced ? 'Connected' : 'Syncing…'
    } else if (s.retryAt !== null) {
      const secs = Math.ceil((s.retryAt - Date.now()) / 1000)
      text = secs >= 1 ? `Reconnecting in ${secs}s` : 'Reconnecting…'
      retry = secs >= 1
    } else {
      text = s.everSynced ? 'Reconnecting…' : 'Connecting…'
    }
    ui.status.dataset.status = status
    ui.status.dataset.synced = String(s.status === 'connected' && s.synced)
    ui.statusText.textContent = text
    ui.retry.hidden = !retry
    // While disconnected, look again four times a second: the countdown and the delayed
    // banner change with time alone.
    if (!(s.status === 'connected' && s.synced) && !s.refused && !retryTicker) {
      retryTicker = setInterval(() => {
        if ((conn.state.status === 'connected' && conn.state.synced) || conn.state.refused) {
          clearInterval(retryTicker)
          retryTicker = 0
        }
        renderStatus()
        renderBanner()
      }, 250)
    }
  }

  const SAVE_TEXT = {
    loading: '',
    saved: 'All changes saved',
    saving: 'Saving…',
    unsaved: 'Edits not sent yet',
    synced: 'Changes synced'
  }
  const renderSaved = () => {
    const s = conn.state
    ui.saved.dataset.saveState = s.save
    ui.saved.dataset.saved = String(s.save === 'saved')
    ui.saved.textContent = SAVE_TEXT[s.save]
    ui.saved.title =
      s.save === 'saved' && s.savedVersion !== null
        ? `Stored on the server (version ${s.savedVersion})`
        : s.save === 'unsaved'
          ? 'You are offline; your edits are kept in this tab and sent when the connection is back. Keep this tab open.'
          : s.save === 'synced'
            ? 'The server has your changes.'
            : ''
  }

  let lastPresenceKey = ''
  const renderPresence = () => {
    const states = conn.awareness.getStates()
    const me = ydoc.clientID
    const people = []
    for (const [id, state] of states) {
      if (!state || (id !== me && !state.user)) continue
      const user = state.user ?? {}
      people.push({
        id,
        self: id === me,
        name: cleanName(user.name) || 'Anonymous',
        color: isColor(user.color) ? user.color : '#64748b'
      })
    }
    people.sort((a, b) => (a.self === b.self ? a.name.localeCompare(b.name) : a.self ? -1 : 1))
    const key = JSON.stringify(people)
    if (key === lastPresenceKey) return
    lastPresenceKey = key
    ui.presence.dataset.count = String(people.length)
    ui.presence.replaceChildren(
      ...people.map((p) => {
        const li = h(
          'li',
          {
            class: 'avatar',
            title: p.self ? `${p.name} (you)` : p.name,
            dataset: { userName: p.name, clientId: String(p.id), self: String(p.self) }
          },
          [h('span', { 'aria-hidden': 'true', text: initials(p.name) }), h('span', { class: 'sr-only', text: p.self ? `${p.name} (you)` : p.name })]
        )
        li.style.setProperty('--user-color', p.color)
        return li
      })
    )
    const others = people.length - 1
    ui.userCount.textContent = others <= 0 ? 'Only you' : `${plural(others, 'other', 'others')} here`
  }

  const renderTyping = () => {
    const names = conn.typingNames()
    let text = ''
    if (names.length === 1) text = `${names[0]} is typing…`
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`
    else if (names.length > 2) text = `${names.length} people are typing…`
    ui.typing.textContent = text
  }

  const renderBanner = () => {
    const s = conn.state
    let kind = ''
    let content = []
    if (s.refused) {
      kind = 'error'
      content = [
        h('strong', { text: 'Not connected. ' }),
        s.refused,
        ' Your edits stay in this tab. ',
        h('button', { class: 'btn btn-small', onclick: () => conn.retryNow(), text: 'Try again' })
      ]
    } else if (!s.online) {
      kind = 'warning'
      content = ['You are offline. Keep typing: your edits stay in this tab and are sent when the connection is back.']
    } else if (!(s.status === 'connected' && s.synced)) {
      const lostAWhile = s.lostAt !== null && Date.now() - s.lostAt >= BANNER_DELAY_MS
      const keepsFailing = s.failedAttempts >= REFUSED_AFTER_ATTEMPTS
      if (lostAWhile || keepsFailing) {
        kind = 'warning'
        content = [
          s.lastClose ??
            (keepsFailing
              ? 'Cannot reach this document. The server may be down, or it may refuse this link (for example an expired access link).'
              : 'The connection to the server was lost.'),
          s.everSynced ? ' Keep typing: your edits stay in this tab and are sent when the connection is back.' : ' Retrying…'
        ]
      }
    }
    if (kind === '' && readOnly) {
      kind = 'info'
      content = [h('strong', { text: 'View only. ' }), 'You can read along, but you cannot edit this document.']
    }
    ui.banner.hidden = kind === ''
    ui.banner.dataset.kind = kind
    ui.banner.replaceChildren(...content)
  }

  // A given title wins over the first line (see doctitle.js).
  const renderTitle = () => docTitle?.render()

  const renderStats = () => {
    const text = ytext.toString()
    const words = (text.match(/\S+/g) ?? []).length
    ui.stats.textContent = `${plural(words, 'word', 'words')} · ${plural(text.length, 'character', 'characters')}`
  }

  const render = () => {
    const s = conn.state
    setReadOnly(s.role === 'read')
    if (s.everSynced) setPlaceholder(readOnly ? 'This document is empty.' : 'Start typing…')
    renderStatus()
    renderSaved()
    renderTyping()
    renderBanner()
  }

  /** clientID → "name|color" of remote users, to notice renames. */
  const seenUsers = new Map()
  const redrawCaretsOnRename = () => {
    let renamed = false
    for (const [id, state] of conn.awareness.getStates()) {
      if (id === ydoc.clientID) continue
      const key = `${state?.user?.name}|${state?.user?.color}`
      if (seenUsers.has(id) && seenUsers.get(id) !== key) renamed = true
      seenUsers.set(id, key)
    }
    for (const id of seenUsers.keys()) {
      if (!conn.awareness.getStates().has(id)) seenUsers.delete(id)
    }
    if (renamed) {
      // Not inside whatever update emitted this event.
      queueMicrotask(() => {
        view.dispatch({ effects: carets.reconfigure([]) })
        view.dispatch({ effects: carets.reconfigure(yRemoteSelections) })
        // A fresh plugin draws on its first update, not on creation.
        view.dispatch({})
      })
    }
  }
  conn.awareness.on('change', () => {
    renderPresence()
    redrawCaretsOnRename()
  })
  ytext.observe(() => {
    renderTitle()
    renderStats()
  })
  // Typing hints expire on their own; look again every second.
  setInterval(renderTyping, 1000)

  // ---- controls ------------------------------------------------------------------------------
  ui.retry.addEventListener('click', () => conn.retryNow())

  byId('copy-link').addEventListener('click', async () => {
    // The clean address: a token in this page's URL is this person's, not something to share.
    const link = `${location.origin}${location.pathname}`
    try {
      await copyText(link)
      toast('Link copied. Anyone with the link can open this document.')
    } catch {
      toast(`Copy this link: ${link}`)
    }
  })

  const meButton = byId('me')
  const mePanel = byId('me-panel')
  const meName = /** @type {HTMLInputElement} */ (byId('me-name'))
  const meColors = byId('me-colors')
  meName.maxLength = MAX_NAME

  const renderMe = () => {
    meButton.replaceChildren(
      h('span', { class: 'avatar avatar-small', 'aria-hidden': 'true', text: initials(identity.name) }),
      h('span', { class: 'me-name', text: identity.name })
    )
    meButton.style.setProperty('--user-color', identity.color)
    for (const b of meColors.children) {
      b.setAttribute('aria-checked', String(b.dataset.color === identity.color))
    }
  }
  const updateIdentity = (changes) => {
    identity = { ...identity, ...changes }
    saveIdentity(identity)
    conn.setIdentity(identity)
    renderMe()
  }
  for (const color of PALETTE) {
    const b = h('button', { type: 'button', class: 'swatch', role: 'radio', 'aria-label': color, dataset: { color } })
    b.style.setProperty('--user-color', color)
    b.addEventListener('click', () => updateIdentity({ color }))
    meColors.append(b)
  }
  let nameTimer = 0
  meName.addEventListener('input', () => {
    clearTimeout(nameTimer)
    nameTimer = setTimeout(() => {
      const name = cleanName(meName.value)
      if (name && name !== identity.name) updateIdentity({ name })
    }, 300)
  })
  meName.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === 'Escape') closePanel()
  })
  const openPanel = () => {
    mePanel.hidden = false
    meButton.setAttribute('aria-expanded', 'true')
    meName.value = identity.name
    meName.focus()
    meName.select()
  }
  const closePanel = () => {
    if (mePanel.hidden) return
    const name = cleanName(meName.value)
    if (name && name !== identity.name) updateIdentity({ name })
    mePanel.hidden = true
    meButton.setAttribute('aria-expanded', 'false')
  }
  meButton.addEventListener('click', () => (mePanel.hidden ? openPanel() : closePanel()))
  document.addEventListener('mousedown', (e) => {
    if (!mePanel.hidden && !mePanel.contains(/** @type {Node} */ (e.target)) && !meButton.contains(/** @type {Node} */ (e.target))) closePanel()
  })

  // Leaving with edits the server has not confirmed would lose them: ask first.
  window.addEventListener('beforeunload', (e) => {
    if (conn.hasUnsavedEdits()) e.preventDefault()
  })

  renderMe()
  renderPresence()
  renderTitle()
  renderStats()
  render()
  if (!('ontouchstart' in window)) view.focus()

  // For debugging from the console: `weft.ydoc`, `weft.provider`, …
  window.weft = { ydoc, ytext, view, provider: conn.provider, connection: conn, history: historyPanel }
}

main()
