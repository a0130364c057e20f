// Sends calls through Segment's Node library, unchanged, and reports what it saw.
// Usage: node send.mjs <host> <write key> <calls.json>
// calls.json: [{"method": "track", "args": {...}}, ...], in order.
import { readFileSync } from 'node:fs'
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, file] = process.argv.slice(2)
const calls = JSON.parse(readFileSync(file, 'utf8'))
const analytics = new Analytics({ writeKey, host, flushAt: 100, flushInterval: 200, maxRetries: 0 })
const errors = []
const statuses = []
analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.message ?? err)))
analytics.on('http_response', (response) => statuses.push(response.status))
for (const { method, args } of calls) {
  analytics[method](args)
}
await analytics.closeAndFlush({ timeout: 20000 })
console.log(JSON.stringify({ errors, statuses }))
process.exit(errors.length ? 1 : 0)
