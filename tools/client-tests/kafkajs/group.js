// kafkajs's plain producer and consumer group against a broker, as test_kafkajs.py drives them:
// two members of one group (in this process) split the partitions between them; then keyed
// messages are produced with acks=all, and the members consume them all, commit as they go, and
// leave. The members settle before anything is produced, so no rebalance makes a member read
// again what the other had read (kafkajs commits at least once, not exactly once).
//
// Usage: node group.js CONFIG_JSON, where the config names bootstrap, topic, partitions, group,
// messages (how many to produce), keys, deadlineMs and resultPath (where the JSON result goes).

const fs = require('fs')
const { CONSUMER_POLLING, kafkaOf, run, waitUntil: waitFor } = require('./support')

const config = JSON.parse(process.argv[2])
const kafka = kafkaOf(config, 'ferrite-kafkajs-group')
const waitUntil = (condition, what) => waitFor(condition, what, config.deadlineMs)

// Produces every message with acks=all, 50 per request, in order.
async function produceAll () {
  const producer = kafka.producer()
  await producer.connect()
  for (let start = 0; start < config.messages; start += 50) {
    const messages = []
    for (let index = start; index < Math.min(start + 50, config.messages); index++) {
      messages.push({ key: `key-${index % config.keys}`, value: `value-${index}` })
    }
    await producer.send({ topic: config.topic, acks: -1, messages })
  }
  await producer.disconnect()
}

async function consumeWithTwoMembers () {
  const consumed = []
  const assignments = {}
  const members = ['a', 'b'].map((name) => ({ name, consumer: kafka.consumer({ groupId: config.group, ...CONSUMER_POLLING }) }))
  for (const { name, consumer } of members) {
    assignments[name] = []
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      assignments[name].push(event.payload.memberAssignment[config.topic] || [])
    })
    await consumer.connect()
    await consumer.subscribe({ topics: [config.topic], fromBeginning: true })
    await consumer.run({
      autoCommitInterval: 100,
      eachMessage: async ({ partition, message }) => {
        consumed.push({
          member: name,
          key: message.key.toString(),
          value: message.value.toString(),
          partition,
          offset: message.offset,
        })
      },
    })
  }
  // Settled: the last assignments of the two are disjoint, non-empty and cover every partition.
  const settled = () => {
    const [a, b] = members.map(({ name }) => assignments[name].at(-1) || [])
    const all = new Set([...a, ...b])
    return a.length > 0 && b.length > 0 && all.size === a.length + b.length && all.size === config.partitions
  }
  await waitUntil(settled, 'the two members to split the partitions')
  // The split as it stood when settled, and as it stood once everything was consumed: read
  // before the members leave, since the first to leave hands its partitions to the other.
  const current = () => Object.fromEntries(members.map(({ name }) => [name, assignments[name].at(-1)]))
  const split = current()
  await produceAll()
  await waitUntil(() => consumed.length >= config.messages, `${config.messages} messages consumed`)
  const splitOnceConsumed = current()
  for (const { consumer } of members) await consumer.disconnect()
  return { consumed, split, splitOnceConsumed }
}

async function main () {
  const result = await consumeWithTwoMembers()
  fs.writeFileSync(config.resultPath, JSON.stringify(result))
}

run(main)
