// Bundled at test time (esbuild) into the page `browser.mjs` serves:
// Segment's analytics-next from npm, unmodified, pointed at Switchyard the
// way Segment's custom-proxy documentation says (cdnURL + apiHost).
import { AnalyticsBrowser } from '@segment/analytics-next'

window.runScenario = async ({ host, writeKey, mode, user }) => {
  const segmentIo = { apiHost: `${host}/v1`, protocol: 'http' }
  if (mode === 'batching') {
    segmentIo.deliveryStrategy = { strategy: 'batching', config: { size: 10, timeout: 300 } }
  }
  const settings = { writeKey, cdnURL: `http://${host}` }
  if (mode === 'inline-settings') {
    // Skips the settings fetch, so the events themselves meet CORS.
    settings.cdnSettings = { integrations: { 'Segment.io': { apiKey: writeKey } }, metrics: { sampleRate: 0 } }
  }
  const [analytics] = await AnalyticsBrowser.load(settings, { integrations: { 'Segment.io': segmentIo } })
  // alias first: after identify() the SDK replaces alias's userId.
  await analytics.alias(user, `anon-${user}`)
  await analytics.identify(user, { email: `${user}@example.com`, plan: 'pro' })
  await analytics.track('Browser Clicked', { button: 'buy', price: 19.5, nested: { list: [1, 'two'] } })
  await analytics.page('Docs', 'Getting Started', { section: 'intro' })
  await analytics.group('g-acme', { name: 'Acme' })
  return { anonymousId: analytics.user().anonymousId(), userAgent: navigator.userAgent, url: location.href }
}
