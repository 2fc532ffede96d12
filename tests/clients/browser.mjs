// Drives an unmodified browser SDK in Debian's Chromium (playwright-core,
// never a downloaded browser). The page is served here on its own loopback
// port, so every request to Switchyard (another port) is cross-origin.
//
// Usage: node browser.mjs SDK HOST WRITE_KEY MODE USER
//   SDK: segment (analytics-next) — MODE: standard | batching | inline-settings
//   SDK: rudderstack (@rudderstack/analytics-js) — MODE: standard
// Prints one JSON line: what the page reported (anonymousId, userAgent,
// url), and the requests the browser saw fail.
import http from 'node:http'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const modules = path.resolve(here, '../../target/clients/browser/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const esbuild = require('esbuild')
const { chromium } = require('playwright-core')

const [sdk, host, writeKey, mode, user] = process.argv.slice(2)
const entry = path.join(here, 'browser', `${sdk}.js`)
const bundle = await esbuild.build({
  entryPoints: [entry], bundle: true, write: false, format: 'iife', platform: 'browser',
  nodePaths: [modules], logLevel: 'error', define: { 'process.env.NODE_ENV': '"production"' },
})
const script = bundle.outputFiles[0].text
const page = '<!doctype html><html><head><title>shop</title><script src="/app.js"></script></head><body>shop</body></html>'
const server = http.createServer((req, res) => {
  const js = req.url.startsWith('/app.js')
  res.writeHead(200, { 'Content-Type': js ? 'text/javascript' : 'text/html' })
  res.end(js ? script : page)
})
await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
const origin = `http://127.0.0.1:${server.address().port}`

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
})
const failed = []
try {
  const context = await browser.newContext()
  const tab = await context.newPage()
  tab.on('requestfailed', (r) => failed.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`))
  await tab.goto(`${origin}/shop/checkout?utm_source=test`)
  let report
  try {
    report = await tab.evaluate((args) => window.runScenario(args), { host, writeKey, mode, user })
  } catch (e) {
    report = { error: String(e) }
  }
  // Let batches flush and retries (if any) run before the page goes.
  await tab.waitForTimeout(mode === 'batching' || sdk === 'rudderstack' ? 1500 : 700)
  console.log(JSON.stringify({ origin, ...report, failed }))
} finally {
  await browser.close()
  server.close()
}
