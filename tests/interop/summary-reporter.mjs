// A node:test reporter that prints one closing line, `N passed, N failed`, counting tests (not
// suites). The Rust wrapper (tests/tests/interop.rs) looks for that line. It runs next to the
// built-in `spec` reporter, which prints each test and the failure details.
//
// A test file that fails to load or crashes is reported by the runner as a failed test, so it
// shows up in the count too.

/** @param {AsyncIterable<{ type: string, data: any }>} source */
export default async function * summary (source) {
  let passed = 0
  let failed = 0
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue
    if (event.data.details?.type === 'suite') continue
    // A skipped or todo test is reported as a pass; it is not a passing interop check.
    if (event.data.skip !== undefined || event.data.todo !== undefined) continue
    if (event.type === 'test:pass') passed++
    else failed++
  }
  yield `${passed} passed, ${failed} failed\n`
}
