// Keyboard shortcuts: the page's own (preview, history, export, theme, this list) and the list
// behind `?` of every binding the editor has, CodeMirror's included. `?` opens the list when
// the focus is not in a text field (in the editor `?` is just a character); Ctrl+/ (⌘/ on a
// Mac) opens it from anywhere. Escape closes it (the native dialog's cancel).
//
// Hooks for tests: #shortcuts[open], #shortcuts-list > [data-keys], #shortcuts-button.

import { byId, h } from './common.js'

const MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent)
const MOD = MAC ? '⌘' : 'Ctrl'
const ALT = MAC ? '⌥' : 'Alt'

/**
 * Every binding, grouped, as [keys, what]. Keys use `Mod` and `Alt`, shown per platform. Keep in
 * step with the keymaps in editor.js (yUndoManagerKeymap, searchKeymap, defaultKeymap) and the
 * page shortcuts below.
 */
const GROUPS = [
  ['Document', [
    ['Alt-Shift-P', 'Show or hide the Markdown preview'],
    ['Alt-Shift-H', 'Open or close History'],
    ['Alt-Shift-E', 'Export as .md, .txt or .html'],
    ['Alt-Shift-D', 'Switch between the light and dark theme'],
    ['?  or  Mod-/', 'This list of shortcuts'],
    ['Escape', 'Close a panel, menu or this list']
  ]],
  ['Editing', [
    ['Mod-Z', 'Undo your own last change'],
    ['Mod-Y  or  Mod-Shift-Z', 'Redo'],
    ['Alt-↑ / Alt-↓', 'Move the line up or down'],
    ['Shift-Alt-↑ / Shift-Alt-↓', 'Copy the line up or down'],
    ['Mod-Shift-K', 'Delete the line'],
    ['Mod-] / Mod-[', 'Indent or unindent the line'],
    ['Mod-A', 'Select everything']
  ]],
  ['Search', [
    ['Mod-F', 'Find and replace'],
    ['Mod-G  or  F3', 'Next match'],
    ['Mod-Shift-G  or  Shift-F3', 'Previous match'],
    ['Mod-D', 'Select the next occurrence'],
    ['Mod-Shift-L', 'Select every occurrence'],
    ['Mod-Alt-G', 'Go to line']
  ]]
]

const show = (keys) => keys.replaceAll('Mod', MOD).replaceAll('Alt', ALT)

/** Whether the keyboard is in a place where `?` types a character. */
const typingInto = (el) =>
  el instanceof HTMLElement && (el.isContentEditable || el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT')

/**
 * Wires the shortcuts dialog and the page shortcuts.
 * @param {Record<'preview' | 'history' | 'export' | 'theme', () => void>} actions
 */
export const setupShortcuts = (actions) => {
  const dialog = /** @type {HTMLDialogElement} */ (byId('shortcuts'))
  const list = byId('shortcuts-list')
  list.replaceChildren(
    ...GROUPS.map(([title, rows]) =>
      h('section', { class: 'shortcut-group' }, [
        h('h3', { text: title }),
        h('dl', {}, rows.flatMap(([keys, what]) => [
          h('dt', { dataset: { keys } }, show(keys).split(/(\s+or\s+|\s*\/\s*)/).map((part) =>
            /^\s*(or|\/)\s*$/.test(part) ? h('span', { class: 'muted', text: ` ${part.trim()} ` }) : h('kbd', { text: part.trim() })
          )),
          h('dd', { text: what })
        ]))
      ])
    )
  )
  const open = () => {
    if (!dialog.open) dialog.showModal()
  }
  byId('shortcuts-button').addEventListener('click', open)
  byId('shortcuts-close').addEventListener('click', () => dialog.close())
  // A click on the backdrop (outside the dialog's box) closes it.
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close()
  })

  /** Alt+Shift+letter by physical key, so it works on every layout and on a Mac's ⌥. */
  const ALT_SHIFT = { KeyP: 'preview', KeyH: 'history', KeyE: 'export', KeyD: 'theme' }
  document.addEventListener(
    'keydown',
    (e) => {
      if (e.defaultPrevented || e.isComposing) return
      const mod = MAC ? e.metaKey : e.ctrlKey
      if (e.altKey && e.shiftKey && !e.ctrlKey && !e.metaKey && ALT_SHIFT[e.code]) {
        e.preventDefault()
        actions[ALT_SHIFT[e.code]]()
      } else if (mod && !e.altKey && e.key === '/') {
        e.preventDefault()
        open()
      } else if (e.key === '?' && !mod && !e.altKey && !typingInto(document.activeElement) && !dialog.open) {
        e.preventDefault()
        open()
      }
    },
    // Before CodeMirror sees it: Alt+Shift+letter and Mod+/ are the page's, even in the editor.
    { capture: true }
  )
  return { open }
}
