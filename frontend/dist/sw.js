// The editor's service worker, served at /sw.js so its scope covers /d/. It makes /d/{id} open
// with no network: the page comes from the network when it answers and from this cache when
// it does not; the document's text then comes from the tab's IndexedDB copy (offline.js).
//
// Rules, and why:
// - One cache per build, named by a hash of the cached files (build.mjs fills in the values
//   below). A new build changes this file, so the browser installs the new worker, which takes
//   over at once and deletes every older cache: nobody keeps an old app after an upgrade.
// - Pages are network first. The cache answers a navigation only when the network fails, so an
//   online visit always gets the server's current page (and its error pages for bad names).
// - The cached page is stored under one fixed key, never under the visited URL: URLs carry
//   document ids and `?token=`, which must not become cache keys (or be kept on disk by us).
// - Only GETs of /d/* pages and /assets/* are handled. The API, WebSockets and everything else
//   go to the network untouched, so no response that depends on a token or on live data is
//   ever served from here.
//
// Not bundled: a plain script, copied into dist/ by build.mjs with the placeholders replaced.

const VERSION = '7f1a3527def52d34'
const CACHE = `weft-shell-${VERSION}`
/** The editor page's hashed copy; every /d/{id} page is this same file. */
const EDITOR_SHELL = '/assets/editor-f00012d013.html'
/** Everything the editor page loads: its script, stylesheet and icon (hashed file names). */
const ASSETS = JSON.parse('["/assets/editor-PWVWKSE4.js","/assets/style-UKZANH4P.css","/assets/favicon-39aa6cdbe5.svg"]')

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE)
      await cache.addAll([EDITOR_SHELL, ...ASSETS])
      await self.skipWaiting()
    })()
  )
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('weft-shell-') && name !== CACHE) await caches.delete(name)
      }
      await self.clients.claim()
    })()
  )
})

/** Network first; the cached editor page when the network cannot be reached. */
const editorPage = async (request) => {
  try {
    return await fetch(request)
  } catch (e) {
    const cache = await caches.open(CACHE)
    const shell = await cache.match(EDITOR_SHELL)
    if (shell) return shell
    throw e
  }
}

/** Hashed assets never change: the cache first, the network for anything not cached. */
const asset = async (request) => {
  const cache = await caches.open(CACHE)
  const hit = await cache.match(request, { ignoreSearch: true })
  return hit ?? fetch(request)
}

self.addEventListener('fetch', (event) => {
  const { request } = event
  if (request.method !== 'GET') return
  const url = new URL(request.url)
  if (url.origin !== self.location.origin) return
  if (request.mode === 'navigate' && /^\/d\/[^/]+\/?$/.test(url.pathname)) {
    event.respondWith(editorPage(request))
  } else if (url.pathname.startsWith('/assets/')) {
    event.respondWith(asset(request))
  }
})
