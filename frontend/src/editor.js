// The editor page, /d/{id}: CodeMirror 6 bound to the document's Y.Text `content` through
// y-codemirror.next, with Markdown highlighting and preview, presence, typing hints, connection
// and save status, export, sharing and keyboard shortcuts.
//
// Hooks for tests and tools (stable; change them together with tests/tests/browser.rs):
//   #status[data-status="connected|connecting|offline"][data-synced="true|false"]
//   #saved[data-saved="true|false"][data-save-state="loading|local|saved|saving|unsaved|synced|deleted"]
//   #presence[data-count] > li[data-user-name][data-self][data-following], #following,
//   weft.following()
//   body[data-readonly="true|false"], #typing, #banner[data-kind][data-reason="deleted"] with
//   #save-copy and #forget-copy, window.weft.local (offline.js: `fact(name)`, `settled()`)
// and the History panel's, listed in history.js; the preview's, export menu's, share panel's,
// shortcut list's and theme's in preview.js, export.js, share.js, shortcuts.js and theme.js.

import './diagnostics.js'
import './theme.js'

import * as Y from 'yjs'
import { Compartment, EditorState, Prec } from '@codemirror/state'
import { EditorView, drawSelection, dropCursor, highlightSpecialChars, keymap, placeholder } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { search, searchKeymap } from '@codemirror/search'
import { YSyncConfig, yCollab, yRemoteSelections, yRemoteSelectionsTheme, ySyncFacet, yUndoManagerKeymap } from 'y-codemirror.next'

import { byId, h, roomNameProblem } from './common.js'
import { Connection } from './connection.js'
import { DocTitle } from './doctitle.js'
import { setupExport } from './export.js'
import { HistoryPanel } from './history.js'
import { markdownSupport } from './markdown.js'
import { LocalCopy, checkOnServer, registerServiceWorker, saveAsNewDocument } from './offline.js'
import { Preview } from './preview.js'
import { SharePanel } from './share.js'
import { setupShortcuts } from './shortcuts.js'
import { onThemeChange, toggleTheme } from './theme.js'
import { PALETTE, cleanName, initials, isColor, loadIdentity, saveIdentity, tokenSubject, MAX_NAME } from './identity.js'

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
    // A Markdown heading's title is its text, without the `#`s.
    const t = line.trim().replace(/^#{1,6}\s+/, '')
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
  // A token that names its user decides the name shown to the others (not stored: another
  // token, another name).
  const subject = tokenSubject(token)
  if (subject) identity = { ...identity, name: subject }
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')
  // This device's copy of the document; loaded before the connection starts (openDocument).
  const local = new LocalCopy(docId, ydoc)

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
    connect: false,
    localCopy: local.persistence,
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
  const darkness = new Compartment()
  const undoManager = new Y.UndoManager(ytext)
  /** Runs after every view update; set once the caret labels can be marked (`markCarets`). */
  let afterViewUpdate = () => {}
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
        markdownSupport(),
        darkness.of([]),
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
        // Caret widgets are redrawn with the text; their label classes go with them.
        EditorView.updateListener.of(() => afterViewUpdate()),
        EditorView.theme({
          // Remote name labels show while their caret moves, on hover and when followed
          // (`markCarets`, style.css); at rest they would cover the line above.
          '.cm-ySelectionInfo': {
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

  // CodeMirror's own dark colours (selection, search matches) follow the page's theme.
  onThemeChange((theme) => view.dispatch({ effects: darkness.reconfigure(EditorView.darkTheme.of(theme === 'dark')) }))

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

  // ---- following a collaborator, and caret labels ------------------------------------------------
  /** The client id whose caret the view follows, or null. */
  let followed = /** @type {number | null} */ (null)
  const followNote = h('span', { id: 'following', class: 'following-note', hidden: true })
  ui.userCount.after(followNote)

  /** Where a client's caret is in the text, from its awareness state; null if unknown. */
  const caretIndex = (id) => {
    const head = conn.awareness.getStates().get(id)?.cursor?.head
    if (!head) return null
    const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(head), ydoc)
    return abs && abs.type === ytext ? Math.min(abs.index, view.state.doc.length) : null
  }
  /** Brings the followed caret into view: centred when following starts, then only as needed. */
  const scrollToFollowed = (centre) => {
    if (followed === null) return
    const index = caretIndex(followed)
    if (index === null) return
    view.dispatch({ effects: EditorView.scrollIntoView(index, centre ? { y: 'center' } : { y: 'nearest', yMargin: 80 }) })
  }
  const setFollowed = (id) => {
    if (followed === id) return
    followed = id
    document.body.dataset.following = String(id !== null)
    renderPresence()
    markCarets()
    scrollToFollowed(true)
  }
  ui.presence.addEventListener('click', (e) => {
    const li = /** @type {HTMLElement} */ (e.target).closest('li[data-client-id]')
    if (!li || li.dataset.self === 'true') return
    const id = Number(li.dataset.clientId)
    setFollowed(followed === id ? null : id)
  })
  ui.presence.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' && e.key !== ' ') return
    e.preventDefault()
    /** @type {HTMLElement} */ (e.target).click()
  })
  // Scrolling or typing takes the view back: following stops.
  const stopFollowing = () => setFollowed(null)
  window.addEventListener('wheel', stopFollowing, { passive: true })
  window.addEventListener('touchmove', stopFollowing, { passive: true })
  view.dom.addEventListener('keydown', stopFollowing)
  view.dom.addEventListener('mousedown', stopFollowing)
  document.addEventListener('keydown', (e) => {
    if (['PageUp', 'PageDown', 'Home', 'End', 'ArrowUp', 'ArrowDown'].includes(e.key) && !ui.presence.contains(/** @type {Node} */ (e.target))) stopFollowing()
  })

  /** Name → when that person's caret last moved; their label shows for LABEL_MS after. */
  const moved = new Map()
  const LABEL_MS = 2500
  let labelTimer = 0
  const noteMoves = (ids) => {
    const now = Date.now()
    for (const id of ids) {
      const name = conn.awareness.getStates().get(id)?.user?.name
      if (id !== ydoc.clientID && name) moved.set(cleanName(name), now)
    }
    // After the caret widgets are redrawn for this change.
    requestAnimationFrame(markCarets)
  }
  /** Shows the labels of carets that moved lately or are followed; the rest fade. */
  const markCarets = () => {
    const now = Date.now()
    const followedName = followed === null ? null : cleanName(conn.awareness.getStates().get(followed)?.user?.name)
    let next = Infinity
    for (const info of view.dom.querySelectorAll('.cm-ySelectionInfo')) {
      const name = info.textContent ?? ''
      const since = now - (moved.get(name) ?? -Infinity)
      const show = since < LABEL_MS || name === followedName
      if (since < LABEL_MS) next = Math.min(next, LABEL_MS - since)
      info.parentElement?.classList.toggle('weft-label-shown', show)
      info.parentElement?.classList.toggle('weft-followed', name === followedName)
    }
    clearTimeout(labelTimer)
    if (next !== Infinity) labelTimer = setTimeout(markCarets, next + 20)
  }
  afterViewUpdate = () => requestAnimationFrame(markCarets)

  // ---- rendering -----------------------------------------------------------------------------
  let retryTicker = 0
  const renderStatus = () => {
    const s = conn.state
    let status = s.status
    let text
    let retry = false
    const away = awayAWhile()
    if (s.deleted) {
      status = 'offline'
      text = 'Deleted'
    } else if (s.refused) {
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
      // Gone for a while (or never reached): say "offline", not a string of reconnects.
      if (away) status = 'offline'
      text = away ? 'Offline' : secs >= 1 ? `Reconnecting in ${secs}s` : 'Reconnecting…'
      if (away && secs >= 1) text += ` · retry in ${secs}s`
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
    if (!(s.status === 'connected' && s.synced) && !s.refused && !s.deleted && !retryTicker) {
      retryTicker = setInterval(() => {
        if ((conn.state.status === 'connected' && conn.state.synced) || conn.state.refused || conn.state.deleted) {
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
    local: 'Kept on this device',
    saved: 'All changes saved',
    saving: 'Saving…',
    unsaved: 'Edits not sent yet',
    synced: 'Changes synced',
    deleted: 'Not stored: deleted'
  }
  const renderSaved = () => {
    const s = conn.state
    ui.saved.dataset.saveState = s.save
    ui.saved.dataset.saved = String(s.save === 'saved')
    ui.saved.textContent = s.save === 'unsaved' && s.localCopy ? 'Edits kept on this device' : SAVE_TEXT[s.save]
    ui.saved.title =
      s.save === 'saved' && s.savedVersion !== null
        ? `Stored on the server (version ${s.savedVersion})`
        : s.save === 'unsaved' || s.save === 'local'
          ? s.localCopy
            ? 'Not on the server yet: your edits are stored in this browser, survive a reload, and are sent when the connection is back.'
            : 'You are offline; your edits are kept in this tab and sent when the connection is back. Keep this tab open.'
          : s.save === 'synced'
            ? 'The server has your changes.'
            : s.save === 'deleted'
              ? 'This document was deleted on the server; nothing is saved to it any more.'
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
        following: id === followed,
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
            title: p.self ? `${p.name} (you)` : p.following ? `Following ${p.name}: click to stop` : `Follow ${p.name}`,
            dataset: { userName: p.name, clientId: String(p.id), self: String(p.self), following: String(p.following) },
            ...(p.self ? {} : { role: 'button', tabindex: '0', 'aria-pressed': String(p.following) })
          },
          [h('span', { 'aria-hidden': 'true', text: initials(p.name) }), h('span', { class: 'sr-only', text: p.self ? `${p.name} (you)` : p.name })]
        )
        li.style.setProperty('--user-color', p.color)
        return li
      })
    )
    const others = people.length - 1
    ui.userCount.textContent = others <= 0 ? 'Only you' : `${plural(others, 'other', 'others')} here`
    const target = people.find((p) => p.following)
    followNote.hidden = !target
    followNote.textContent = target ? `Following ${target.name}` : ''
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
    if (s.deleted) {
      showDeletedBanner()
      return
    }
    if (s.refused) {
      kind = 'error'
      content = [
        h('strong', { text: 'Not connected. ' }),
        s.refused,
        s.localCopy ? ' Your edits are kept on this device. ' : ' Your edits stay in this tab. ',
        h('button', { class: 'btn btn-small', onclick: () => conn.retryNow(), text: 'Try again' })
      ]
    } else if (!s.online) {
      kind = 'warning'
      content = [`You are offline. Keep typing: ${keptWhere()}, and are sent when the connection is back.`]
    } else if (!(s.status === 'connected' && s.synced) && awayAWhile()) {
      const keepsFailing = s.failedAttempts >= REFUSED_AFTER_ATTEMPTS
      kind = 'warning'
      content = [
        s.lastClose ??
          (!s.everSynced && s.localCopy && ytext.length > 0
            ? 'Working offline: the server cannot be reached, so this is the text kept on this device.'
            : keepsFailing
            ? 'Cannot reach this document. The server may be down, or it may refuse this link (for example an expired access link).'
            : 'The connection to the server was lost.'),
        s.everSynced || s.localCopy ? ` Keep typing: ${keptWhere()}, and are sent when the connection is back.` : ' Retrying…'
      ]
    }
    delete ui.banner.dataset.reason
    if (kind === '' && readOnly) {
      kind = 'info'
      content = [h('strong', { text: 'View only. ' }), 'You can read along, but you cannot edit this document.']
    }
    ui.banner.hidden = kind === ''
    ui.banner.dataset.kind = kind
    ui.banner.replaceChildren(...content)
  }

  /** Where unsent edits live, in words for the banner. */
  const keptWhere = () =>
    conn.state.localCopy ? 'your edits are kept on this device (even if you close this tab)' : 'your edits stay in this tab'

  /** Lost for longer than a blip, or never reached: what the status and banner call offline. */
  const awayAWhile = () => {
    const s = conn.state
    if (s.status === 'connected' && s.synced) return false
    const lostAWhile = s.lostAt !== null && Date.now() - s.lostAt >= BANNER_DELAY_MS
    return lostAWhile || s.failedAttempts >= REFUSED_AFTER_ATTEMPTS
  }

  // The deleted document's banner is built once: re-rendering it would replace its buttons
  // under the pointer.
  let copyBusy = false
  const showDeletedBanner = () => {
    if (ui.banner.dataset.reason === 'deleted') return
    const saveCopy = h('button', { id: 'save-copy', class: 'btn btn-small btn-primary', type: 'button', text: 'Save a copy as a new document' })
    saveCopy.addEventListener('click', async () => {
      if (copyBusy) return
      copyBusy = true
      saveCopy.disabled = true
      try {
        const id = await saveAsNewDocument(ytext.toString(), token)
        // The text is on the server under its new id: this device's copy of the deleted
        // document has served its purpose.
        await local.remove()
        location.assign(`/d/${encodeURIComponent(id)}${token ? `?token=${encodeURIComponent(token)}` : ''}`)
      } catch (e) {
        toast(e instanceof Error ? e.message : String(e), 'error')
        saveCopy.disabled = false
        copyBusy = false
      }
    })
    const forget = h('button', { id: 'forget-copy', class: 'btn btn-small', type: 'button', text: 'Remove from this device' })
    forget.addEventListener('click', async () => {
      if (!window.confirm('Remove this deleted document\'s text from this device? This tab keeps showing it until you leave.')) return
      await local.remove()
      conn.state.localCopy = false
      ui.banner.dataset.reason = ''
      render()
      toast('Removed from this device.')
    })
    ui.banner.hidden = false
    ui.banner.dataset.kind = 'error'
    ui.banner.dataset.reason = 'deleted'
    ui.banner.replaceChildren(
      h('strong', { text: 'This document was deleted. ' }),
      conn.state.localCopy
        ? 'Its last text is still shown here and kept on this device. '
        : 'Its last text is still shown in this tab. ',
      saveCopy,
      ...(conn.state.localCopy ? [' ', forget] : [])
    )
  }

  // A given title wins over the first line (see doctitle.js).
  const renderTitle = () => docTitle?.render()

  const renderStats = () => {
    const text = ytext.toString()
    const words = (text.match(/\S+/g) ?? []).length
    ui.stats.textContent = `${plural(words, 'word', 'words')} · ${plural(text.length, 'character', 'characters')}`
  }

  let deletedNoted = false
  let syncedNoted = false
  /** The role of this document's last connection on this device (remembered with the copy). */
  let lastRole = /** @type {string | null} */ (null)
  /** Remembers that the server holds this document, and since when. */
  const noteSynced = async () => {
    const answer = await checkOnServer(docId, token)
    if (answer.state !== 'exists') return
    if (answer.created !== undefined) await local.remember('created', answer.created)
    await local.remember('synced', true)
  }
  const render = () => {
    const s = conn.state
    // A deleted document takes no edits: they could never be saved anywhere. Nor does a page
    // opened offline whose last connection was read-only: the server would refuse them.
    setReadOnly(s.role === 'read' || s.deleted || (s.role === null && lastRole === 'read'))
    if (s.role !== null && s.role !== lastRole) {
      lastRole = s.role
      local.remember('role', s.role)
    }
    if (s.deleted && !deletedNoted) {
      deletedNoted = true
      local.remember('deleted', true)
    }
    // The server confirmed holding this document's content (an empty document is not stored,
    // so only a non-empty one counts): from now on its absence means it was deleted.
    if (!syncedNoted && s.localCopy && (s.save === 'saved' || s.save === 'synced') && ydoc.store.clients.size > 0) {
      syncedNoted = true
      noteSynced()
    }
    if (s.everSynced || (s.localCopy && s.failedAttempts > 0)) setPlaceholder(readOnly ? 'This document is empty.' : 'Start typing…')
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
  conn.awareness.on('change', ({ added, updated }) => {
    renderPresence()
    redrawCaretsOnRename()
    noteMoves([...added, ...updated])
    if (followed !== null && !conn.awareness.getStates().has(followed)) setFollowed(null)
    // Not inside the editor update that may have emitted this event (our own caret).
    else if (followed !== null) queueMicrotask(() => scrollToFollowed(false))
  })
  ytext.observe(() => {
    renderTitle()
    renderStats()
  })
  // Typing hints expire on their own; look again every second.
  setInterval(renderTyping, 1000)

  // ---- controls ------------------------------------------------------------------------------
  ui.retry.addEventListener('click', () => {
    wakeCheck()
    conn.retryNow()
  })

  const preview = new Preview({ ytext })
  const exporter = setupExport(() => ({ text: ytext.toString(), title: titleOf(ytext.toString()) ?? docId }))
  const share = new SharePanel({ docId, token, copy: copyText, toast })
  setupShortcuts({
    preview: () => preview.toggle(),
    history: () => byId('history-button').click(),
    export: () => exporter.open(),
    theme: toggleTheme
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

  // Leaving with edits the server has not confirmed would lose them, unless this device keeps
  // a copy: ask first.
  window.addEventListener('beforeunload', (e) => {
    if ((conn.hasUnsavedEdits() || conn.state.deleted) && !conn.state.localCopy) e.preventDefault()
  })

  // ---- opening: the local copy first, then the server ----------------------------------------
  let wakeCheck = () => {}
  /** Waits `ms`, or less when the person clicks "Retry now". */
  const pause = (ms) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      wakeCheck = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  /**
   * Whether the server still has a document this device's copy was synced with; waits (shown
   * as offline) while the server cannot be reached. Connecting without asking would re-create
   * a document deleted while this device was away, from the copy.
   */
  const stillOnServer = async () => {
    const created = await local.fact('created')
    let delay = 500
    for (;;) {
      const answer = await checkOnServer(docId, token)
      if (answer.state === 'missing') return false
      // Deleted, then created anew under the same name: not the document this copy is of.
      if (answer.state === 'exists' && created !== undefined && answer.created !== undefined) return answer.created === created
      if (answer.state !== 'unreachable') return true
      conn.noteUnreachable(delay)
      await pause(delay)
      delay = Math.min(delay * 2, 2500)
    }
  }
  const openDocument = async () => {
    const loaded = await local.load()
    conn.state.localCopy = loaded
    if (loaded) {
      lastRole = (await local.fact('role')) ?? null
      render()
      if (await local.fact('deleted')) {
        conn.markDeleted()
        return
      }
      if ((await local.fact('synced')) && !(await stillOnServer())) {
        conn.markDeleted()
        return
      }
    }
    conn.start()
  }

  renderMe()
  renderPresence()
  renderTitle()
  renderStats()
  render()
  if (!('ontouchstart' in window)) view.focus()
  registerServiceWorker()
  openDocument()

  // For debugging from the console: `weft.ydoc`, `weft.provider`, …
  window.weft = { ydoc, ytext, view, provider: conn.provider, connection: conn, history: historyPanel, preview, share, following: () => followed, local }
}

main()
