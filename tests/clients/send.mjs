// Sends one event of each type through Segment's official Node SDK.
// Usage: node send.mjs HOST WRITE_KEY PREFIX — exit code 1 if the SDK reported an error.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, prefix] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, maxEventsInBatch: 10, flushInterval: 100, maxRetries: 2 })
let failed = false
analytics.on('error', (err) => { failed = true; console.error('error', err) })

analytics.track({ userId: 'u-node', event: 'Node Event', messageId: `${prefix}-track`,
  properties: { n: 2, price: 19.5, nested: { list: [1, 'two', { x: null }] }, name: 'Ünïcödé ✓' },
  context: { app: { name: 'node-app', version: '4.5.6' } } })
analytics.identify({ userId: 'u-node', traits: { email: 'node@example.com' }, messageId: `${prefix}-identify` })
analytics.page({ userId: 'u-node', category: 'Docs', name: 'Getting Started', properties: { url: 'https://example.com/docs' }, messageId: `${prefix}-page` })
analytics.screen({ userId: 'u-node', name: 'Welcome', properties: { step: 1 }, messageId: `${prefix}-screen` })
analytics.group({ userId: 'u-node', groupId: 'g-acme', traits: { name: 'Acme' }, messageId: `${prefix}-group` })
analytics.alias({ userId: 'u-node', previousId: 'prev-node', messageId: `${prefix}-alias` })
await analytics.closeAndFlush()
process.exit(failed ? 1 : 0)
