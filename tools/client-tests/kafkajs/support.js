// What the kafkajs scripts share: the client, and waiting for a condition with a deadline.

const { Kafka, logLevel } = require('kafkajs')

// A kafkajs client of `config.bootstrap`, logging errors only (to stderr: results go to a file).
function kafkaOf (config, clientId) {
  return new Kafka({
    clientId,
    brokers: [config.bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 10 },
  })
}

// Resolves once `condition()` holds; rejects naming `what` after `deadlineMs`.
async function waitUntil (condition, what, deadlineMs) {
  const deadline = Date.now() + deadlineMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

// Runs `main`, exiting 0 when it resolves and 1 (with the error on stderr) when it rejects.
function run (main) {
  main().then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    },
  )
}

// Consumers should poll with short fetch waits and heartbeats: kafkajs heartbeats (and so
// learns of a rebalance) and stops only between fetches, which wait up to 5 s by default.
const CONSUMER_POLLING = { heartbeatInterval: 500, maxWaitTimeInMs: 200 }

module.exports = { kafkaOf, waitUntil, run, CONSUMER_POLLING }
