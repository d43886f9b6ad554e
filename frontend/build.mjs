// Builds dist/ from src/: three bundles (the editor page, the document list, the server
// dashboard), one stylesheet, the favicon, four HTML pages, and the editor's service worker
// (sw.js, with a hashed copy of the editor page it serves when offline). dist/ is committed and embedded
// in the `weft` binary, so the output must be byte-identical on every run: file names carry a
// hash of their content only, and nothing else (time, absolute paths, random ids) reaches the
// output.
//
// Also fails the build when the bundle holds more than one copy of yjs (Yjs' constructor checks
// break with two) or of lib0.

import { createHash } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import * as esbuild from 'esbuild'

const root = path.dirname(fileURLToPath(import.meta.url))
const src = path.join(root, 'src')
const dist = path.join(root, 'dist')
const assets = path.join(dist, 'assets')

const hashed = (name, ext, bytes) =>
  `${name}-${createHash('sha256').update(bytes).digest('hex').slice(0, 10)}.${ext}`

await rm(dist, { recursive: true, force: true })
await mkdir(assets, { recursive: true })

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: { editor: 'src/editor.js', list: 'src/list.js', dashboard: 'src/dashboard.js', style: 'src/app.css' },
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['chrome100', 'edge100', 'firefox100', 'safari15'],
  charset: 'utf8',
  // License headers of the bundled packages go into one file per bundle next to it.
  legalComments: 'linked',
  sourcemap: false,
  metafile: true,
  logLevel: 'warning'
})

// Exactly one copy of each package whose duplicates break things.
const copies = (pkg) => {
  const roots = new Set()
  for (const input of Object.keys(result.metafile.inputs)) {
    const m = input.match(new RegExp(`^(.*node_modules/${pkg.replace('/', '\\/')})/`))
    if (m) roots.add(m[1])
  }
  return [...roots]
}
for (const pkg of ['yjs', 'lib0']) {
  const found = copies(pkg)
  if (found.length !== 1) {
    console.error(`build: expected exactly one copy of ${pkg} in the bundle, found ${found.length}: ${found.join(', ')}`)
    process.exit(1)
  }
}

/** Output file name (relative to dist/) of an entry point. */
const outputOf = (entry) => {
  for (const [out, meta] of Object.entries(result.metafile.outputs)) {
    if (meta.entryPoint === entry) return path.relative('dist', out).split(path.sep).join('/')
  }
  throw new Error(`no output for ${entry}`)
}

const favicon = await readFile(path.join(src, 'favicon.svg'))
const faviconName = hashed('favicon', 'svg', favicon)
await writeFile(path.join(assets, faviconName), favicon)

const links = {
  '%STYLE%': `/${outputOf('src/app.css')}`,
  '%FAVICON%': `/assets/${faviconName}`
}
const pages = [
  ['index.html', `/${outputOf('src/list.js')}`],
  ['editor.html', `/${outputOf('src/editor.js')}`],
  ['dashboard.html', `/${outputOf('src/dashboard.js')}`],
  ['error.html', null]
]
let editorHtml = ''
for (const [page, script] of pages) {
  let html = await readFile(path.join(src, page), 'utf8')
  for (const [k, v] of Object.entries({ ...links, '%SCRIPT%': script })) {
    if (v !== null) html = html.replaceAll(k, v)
  }
  if (/%[A-Z]+%/.test(html)) throw new Error(`${page}: unreplaced placeholder`)
  await writeFile(path.join(dist, page), html)
  if (page === 'editor.html') editorHtml = html
}

// The service worker: its cache is named by a hash of everything it caches, so any change to
// the editor's files gives a new sw.js, which browsers install in place of the old one.
const editorShell = `/assets/${hashed('editor', 'html', editorHtml)}`
await writeFile(path.join(dist, editorShell.slice(1)), editorHtml)
const shellAssets = [`/${outputOf('src/editor.js')}`, links['%STYLE%'], links['%FAVICON%']]
const version = createHash('sha256').update([editorShell, ...shellAssets].join('\n')).digest('hex').slice(0, 16)
let sw = await readFile(path.join(src, 'sw.js'), 'utf8')
sw = sw.replace('%VERSION%', version).replace('%EDITOR_SHELL%', editorShell).replace('%ASSETS%', JSON.stringify(shellAssets))
if (/%[A-Z_]+%/.test(sw)) throw new Error('sw.js: unreplaced placeholder')
await writeFile(path.join(dist, 'sw.js'), sw)

for (const [out, meta] of Object.entries(result.metafile.outputs).sort()) {
  console.log(`${out.padEnd(44)} ${(meta.bytes / 1024).toFixed(1).padStart(7)} KiB`)
}
