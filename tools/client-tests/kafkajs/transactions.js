// kafkajs's transactions against a broker, as test_kafkajs.py drives them: one aborted
// transaction, then a consume-transform-produce loop (a read_committed group consumer; each
// batch's outputs and the group's offsets in one transaction), then a second producer with the
// same transactional id fencing the first, then kafkajs's own read_committed consumer reading
// the output from the start. The Python test checks what this reports against what the log
// holds (read through confluent-kafka).
//
// Usage: node transactions.js CONFIG_JSON, where the config names bootstrap, source, sink,
// partitions, group, transactionalId, inputs (how many records the source holds), abortedValues
// (written to the sink and aborted), deadlineMs and resultPath (where the JSON result goes:
// stdout may carry kafkajs's log lines).

const fs = require('fs')
const { CONSUMER_POLLING, kafkaOf, run, waitUntil: waitFor } = require('./support')

const config = JSON.parse(process.argv[2])
const kafka = kafkaOf(config, 'ferrite-kafkajs-transactions')
const waitUntil = (condition, what) => waitFor(condition, what, config.deadlineMs)

async function abortOne (producer) {
  const transaction = await producer.transaction()
  await transaction.send({
    topic: config.sink,
    messages: config.abortedValues.map((value, index) => ({ value, partition: index % config.partitions })),
  })
  await transaction.abort()
}

// Until every input went through: each batch of a partition becomes one transaction holding its
// outputs (same partition) and the group's next offset for that partition.
async function transformAll (producer) {
  const consumer = kafka.consumer({ groupId: config.group, readUncommitted: false, ...CONSUMER_POLLING })
  await consumer.connect()
  await consumer.subscribe({ topics: [config.source], fromBeginning: true })
  let transformed = 0
  let transactions = 0
  let failure = null
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return
      try {
        const transaction = await producer.transaction()
        await transaction.send({
          topic: config.sink,
          messages: batch.messages.map((message) => ({
            value: Buffer.concat([Buffer.from('out-'), message.value]),
            partition: batch.partition,
          })),
        })
        const next = (BigInt(batch.lastOffset()) + 1n).toString()
        await transaction.sendOffsets({
          consumerGroupId: config.group,
          topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
        })
        await transaction.commit()
        transformed += batch.messages.length
        transactions += 1
      } catch (error) {
        failure = failure || error
      }
    },
  })
  await waitUntil(() => failure !== null || transformed >= config.inputs, 'every input transformed')
  await consumer.disconnect()
  if (failure !== null) throw failure
  return { transformed, transactions }
}

// A second producer with the same id bumps its epoch (kafkajs sends InitProducerId at its first
// transaction, not at connect): the first one's next transaction fails.
async function fencedError (zombie) {
  const successor = kafka.producer({ transactionalId: config.transactionalId, maxInFlightRequests: 1, idempotent: true })
  await successor.connect()
  const successorTransaction = await successor.transaction()
  let error = null
  try {
    const transaction = await zombie.transaction()
    await transaction.send({ topic: config.sink, messages: [{ value: 'zombie', partition: 0 }] })
    await transaction.commit()
  } catch (caught) {
    error = caught.type || caught.name
  }
  await successorTransaction.abort()
  await successor.disconnect()
  return error
}

// kafkajs's own read_committed consumer, from the start of the output, until it has `count`
// records: the aborted ones come first in every partition, so a consumer that showed them would
// show them before reaching the count.
async function readCommitted (count) {
  const consumer = kafka.consumer({ groupId: `${config.group}-reader`, readUncommitted: false, ...CONSUMER_POLLING })
  await consumer.connect()
  await consumer.subscribe({ topics: [config.sink], fromBeginning: true })
  const values = []
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ message }) => {
      values.push(message.value.toString())
    },
  })
  await waitUntil(() => values.length >= count, `${count} committed outputs read`)
  await consumer.disconnect()
  return values
}

async function main () {
  const producer = kafka.producer({ transactionalId: config.transactionalId, maxInFlightRequests: 1, idempotent: true })
  await producer.connect()
  await abortOne(producer)
  const { transformed, transactions } = await transformAll(producer)
  const fenced = await fencedError(producer)
  await producer.disconnect()
  const read = await readCommitted(transformed)
  fs.writeFileSync(config.resultPath, JSON.stringify({ transformed, transactions, fenced, read }))
}

run(main)
