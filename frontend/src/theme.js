// Light and dark: the page follows the system's `prefers-color-scheme` until the person picks
// one with the theme button; the pick is kept in this browser. Picking the theme the system
// already asks for forgets the pick, so the page follows the system again.
//
// Imported by every page: it sets `<html data-theme="light|dark">` as soon as it runs, and puts
// the toggle into the page's top bar (into #theme-slot when the page has one).
//
// Hooks for tests: html[data-theme][data-theme-source="system|choice"], #theme-toggle[aria-pressed].

const STORAGE_KEY = 'weft.theme'
const media = window.matchMedia('(prefers-color-scheme: dark)')

/** The stored pick, or null when the page follows the system. */
const storedChoice = () => {
  try {
    const v = localStorage.getItem(STORAGE_KEY)
    return v === 'light' || v === 'dark' ? v : null
  } catch {
    return null
  }
}

const systemTheme = () => (media.matches ? 'dark' : 'light')

/** @type {Set<(theme: string) => void>} */
const listeners = new Set()

const apply = () => {
  const choice = storedChoice()
  const theme = choice ?? systemTheme()
  const root = document.documentElement
  root.dataset.theme = theme
  root.dataset.themeSource = choice ? 'choice' : 'system'
  const button = document.getElementById('theme-toggle')
  if (button) {
    button.setAttribute('aria-pressed', String(theme === 'dark'))
    const next = theme === 'dark' ? 'light' : 'dark'
    button.title = `Switch to the ${next} theme (${choice ? 'chosen here' : 'following the system'})`
    button.setAttribute('aria-label', `Dark theme`)
  }
  for (const f of listeners) f(theme)
}

/** The theme shown now. */
export const currentTheme = () => document.documentElement.dataset.theme ?? 'light'

/** Calls `f` with the theme now and on every change. */
export const onThemeChange = (f) => {
  listeners.add(f)
  f(currentTheme())
}

/** Switches to the other theme and remembers it (or forgets, when it is the system's). */
export const toggleTheme = () => {
  const next = currentTheme() === 'dark' ? 'light' : 'dark'
  try {
    if (next === systemTheme()) localStorage.removeItem(STORAGE_KEY)
    else localStorage.setItem(STORAGE_KEY, next)
  } catch {}
  apply()
}

const ICON_SVG =
  '<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><path fill="currentColor" d="M12 3a9 9 0 1 0 9 9 7 7 0 0 1-9-9z"/></svg>'

const mountToggle = () => {
  if (document.getElementById('theme-toggle')) return
  const button = document.createElement('button')
  button.id = 'theme-toggle'
  button.type = 'button'
  button.className = 'btn btn-icon theme-toggle'
  // A fixed, trusted icon: no document or user text goes in here.
  button.innerHTML = ICON_SVG
  button.addEventListener('click', toggleTheme)
  const slot = document.getElementById('theme-slot') ?? document.querySelector('.topbar')
  slot?.append(button)
}

apply()
media.addEventListener('change', apply)
// Another tab of this site toggled: follow it.
window.addEventListener('storage', (e) => {
  if (e.key === STORAGE_KEY || e.key === null) apply()
})
if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', () => {
    mountToggle()
    apply()
  })
} else {
  mountToggle()
  apply()
}
