// What keeps the editor useful without the server: the document's Yjs state in IndexedDB
// (y-indexeddb), so edits survive reloads, crashes and closed tabs until a connection carries
// them; the service worker (sw.js) that lets `/d/{id}` open with no network; and the checks
// that keep a deleted document deleted instead of re-uploading it from the local copy.
//
// The local copy also remembers facts in y-indexeddb's `custom` store:
// - `synced`: this copy was in sync with the server once, so the document existed there. If the
//   server now says it does not exist, it was deleted (or trashed) while this device was away,
//   and connecting would recreate it from the copy.
// - `created`: the document's creation time on the server then. Another creation time under the
//   same id means it was deleted and someone made a new document with that name: the old copy
//   must not be merged into it.
// - `role`: 'read' when the last connection was read-only, so a page opened offline does not
//   take edits the server would refuse.
// - `deleted`: the server said the document was deleted while it was open here. The copy is
//   kept until the person chooses what to do with it (save it as a new document, or remove it).

import { IndexeddbPersistence, clearDocument } from 'y-indexeddb'

/** How long loading the local copy may take before the page goes on without it. */
const LOAD_TIMEOUT_MS = 5000

/** Registers the service worker that caches the editor's page and assets for offline use. */
export const registerServiceWorker = () => {
  // Service workers exist only in secure contexts (https, or http on localhost / 127.0.0.1);
  // on a plain-http LAN address the editor works as before, without offline page loads.
  if (!('serviceWorker' in navigator) || !window.isSecureContext) return
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((e) => {
    console.info('weft: offline page loads are not available here:', e?.message ?? e)
  })
}

/** One document's state kept in this browser's IndexedDB. */
export class LocalCopy {
  /**
   * @param {string} docId
   * @param {import('yjs').Doc} ydoc
   */
  constructor (docId, ydoc) {
    this.name = `weft-doc:${docId}`
    /** Whether the copy loaded; false when IndexedDB is unavailable or broken here. */
    this.available = false
    /** The y-indexeddb provider; its updates to the doc have it as their transaction origin. */
    this.persistence = null
    try {
      this.persistence = new IndexeddbPersistence(this.name, ydoc)
    } catch (e) {
      console.info('weft: edits are kept in this tab only:', e?.message ?? e)
    }
  }

  /** Waits until the stored state is in the doc; resolves to whether a copy is available. */
  async load () {
    const p = this.persistence
    if (!p) return false
    const failed = p._db.then(() => new Promise(() => {}), () => 'failed')
    const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), LOAD_TIMEOUT_MS))
    const outcome = await Promise.race([p.whenSynced.then(() => 'loaded'), failed, timeout])
    this.available = outcome === 'loaded'
    if (!this.available) console.info(`weft: the local copy could not be loaded (${outcome}); edits are kept in this tab only`)
    return this.available
  }

  /** A fact stored with the copy (`synced`, `deleted`), or undefined. */
  async fact (key) {
    if (!this.available) return undefined
    try {
      return await this.persistence.get(key)
    } catch {
      return undefined
    }
  }

  /** Stores a fact with the copy; best effort (a full disk must not break editing). */
  async remember (key, value) {
    if (!this.available) return
    try {
      await this.persistence.set(key, value)
    } catch (e) {
      console.info('weft: could not update the local copy:', e?.message ?? e)
    }
  }

  /**
   * Resolves once every update written so far is committed to disk. IndexedDB runs
   * transactions on one store in order, so a read started now completes after them.
   */
  async settled () {
    if (!this.available) return false
    const db = await this.persistence._db
    await new Promise((resolve, reject) => {
      const txn = db.transaction(['updates'], 'readonly')
      txn.oncomplete = resolve
      txn.onerror = () => reject(txn.error)
      txn.objectStore('updates').count()
    })
    return true
  }

  /** Removes the copy from this device; the tab keeps its text. */
  async remove () {
    if (!this.persistence) return
    await this.persistence.destroy()
    await clearDocument(this.name)
    this.available = false
  }
}

/**
 * Whether the server has the document: `state` is 'exists' (with its `created` time),
 * 'missing' (404: never created, deleted or in the trash), 'unreachable' (no answer: the server
 * or the network is down) or 'unknown' (any other answer, e.g. a refused token: the WebSocket
 * will say why).
 * @param {string} docId
 * @param {string | null} token
 * @returns {Promise<{state: 'exists' | 'missing' | 'unreachable' | 'unknown', created?: number}>}
 */
export const checkOnServer = async (docId, token) => {
  let res
  try {
    res = await fetch(`/api/docs/${encodeURIComponent(docId)}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      cache: 'no-store'
    })
  } catch {
    return { state: 'unreachable' }
  }
  if (res.ok) {
    const meta = await res.json().catch(() => null)
    return { state: 'exists', created: Number.isFinite(meta?.created_ms) ? meta.created_ms : undefined }
  }
  if (res.status === 404) return { state: 'missing' }
  // A proxy in front of a stopped server answers 502/503/504.
  if (res.status >= 502 && res.status <= 504) return { state: 'unreachable' }
  return { state: 'unknown' }
}

/**
 * Creates a new document holding `text`; resolves to its id.
 * @param {string} text
 * @param {string | null} token
 * @throws {Error} with a readable message when the server refuses or cannot be reached
 */
export const saveAsNewDocument = async (text, token) => {
  let res
  try {
    res = await fetch('/api/docs', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ text })
    })
  } catch {
    throw new Error('The server cannot be reached. Your text is still here; try again when it is back.')
  }
  const body = await res.json().catch(() => null)
  if (res.ok && typeof body?.id === 'string') return body.id
  if (res.status === 401 || res.status === 403) {
    throw new Error('This link may not create documents. Ask for a link that may, or copy the text out.')
  }
  throw new Error(body?.message ?? `The server could not create the copy (HTTP ${res.status}).`)
}
