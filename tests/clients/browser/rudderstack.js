// Bundled at test time (esbuild): RudderStack's JS SDK v3 from npm,
// unmodified (its `bundled` build: no plugins fetched from a CDN), pointed
// at Switchyard as its data plane and config URL.
import { RudderAnalytics } from '@rudderstack/analytics-js/bundled'

window.runScenario = ({ host, writeKey, user }) =>
  new Promise((resolve) => {
    const analytics = new RudderAnalytics()
    const timer = setTimeout(() => resolve({ error: 'the SDK never became ready' }), 10000)
    analytics.load(writeKey, `http://${host}`, {
      configUrl: `http://${host}`,
      loadIntegration: false,
      logLevel: 'ERROR',
      onLoaded: () => {},
    })
    analytics.ready(() => {
      clearTimeout(timer)
      analytics.alias(user, `anon-${user}`)
      analytics.identify(user, { email: `${user}@example.com`, plan: 'pro' })
      analytics.track('Browser Clicked', { button: 'buy', price: 19.5, nested: { list: [1, 'two'] } })
      analytics.page('Docs', 'Getting Started', { section: 'intro' })
      analytics.group('g-acme', { name: 'Acme' })
      resolve({ anonymousId: analytics.getAnonymousId(), userAgent: navigator.userAgent, url: location.href })
    })
  })
