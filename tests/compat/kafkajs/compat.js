// sluice compatibility scenario for kafkajs.
//
//   node compat.js HOST:PORT [topic]
//
// Prints one line per step, `compat: kafkajs <step> PASS|FAIL|SKIP <detail>`,
// and exits 0 whatever the results.  Every loop is bounded by a count and a
// deadline.  Codecs: gzip (built in), snappy (kafkajs-snappy), lz4
// (kafkajs-lz4); zstd is skipped (@kafkajs/zstd needs a native zstd build).
'use strict';

const { Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');
const LZ4Codec = require('kafkajs-lz4');

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec;

const TOTAL = 200, PARTITIONS = 3;
const RETENTION = '3600000', MAX_MESSAGE_BYTES = '2000000', ALTERED = '7200000';
const STEP_MS = 30000;
const CODECS = [['gzip', CompressionTypes.GZIP], ['snappy', CompressionTypes.Snappy], ['lz4', CompressionTypes.LZ4]];

const bootstrap = process.argv[2];
const topic = process.argv[3] || `compat-kafkajs-${process.pid}`;
const group = `${topic}-group`;

const kafka = new Kafka({
  clientId: 'compat-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, level, log }) => {
    process.stderr.write(`[kafkajs ${level}] ${namespace}: ${log.message} ${JSON.stringify(log)}\n`);
  },
  retry: { retries: 5 },
});
const admin = kafka.admin();
const want = new Map();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const valueOf = (i, codec) => `kafkajs|${i}|${codec}|${'x'.repeat(i % 50)}`;

function report(step, status, detail) {
  console.log(`compat: kafkajs ${step} ${status} ${String(detail).replace(/\s+/g, ' ')}`.trim());
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function step(name, fn) {
  try {
    const r = await withTimeout(fn(), 2 * STEP_MS, name);
    if (r && r.skip) report(name, 'SKIP', r.skip);
    else report(name, 'PASS', r || '');
  } catch (e) {
    process.stderr.write(`${name}: ${e && e.stack}\n`);
    report(name, 'FAIL', `${e && e.name}: ${e && e.message}`);
  }
}

async function create() {
  const ok = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1,
      configEntries: [{ name: 'retention.ms', value: RETENTION }, { name: 'max.message.bytes', value: MAX_MESSAGE_BYTES }] }],
    waitForLeaders: true, timeout: 10000,
  });
  if (!ok) throw new Error('createTopics returned false (topic already exists?)');
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  const n = md.topics[0].partitions.length;
  if (n !== PARTITIONS) throw new Error(`topic has ${n} partitions, want ${PARTITIONS}`);
  return `${PARTITIONS} partitions, retention.ms=${RETENTION} max.message.bytes=${MAX_MESSAGE_BYTES}`;
}

async function produce() {
  let start = 0;
  for (let c = 0; c < CODECS.length; c++) {
    const [codec, type] = CODECS[c];
    const count = Math.floor(TOTAL / CODECS.length) + (c < TOTAL % CODECS.length ? 1 : 0);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const messages = [];
      for (let i = start; i < start + count; i++) {
        want.set(i, valueOf(i, codec));
        messages.push({ key: `k${i}`, value: valueOf(i, codec) });
      }
      await producer.send({ topic, compression: type, acks: -1, messages });
    } catch (e) {
      e.message = `${codec}: ${e.message}`;
      throw e;
    } finally {
      await producer.disconnect();
    }
    start += count;
  }
  return `${TOTAL} msgs idempotent acks=all codecs=${CODECS.map((c) => c[0]).join(',')}; zstd not tried (needs native @kafkajs/zstd)`;
}

async function consume() {
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  const got = new Map();
  let badKey = null;
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const v = message.value.toString();
        const i = parseInt(v.split('|')[1], 10);
        if (message.key.toString() !== `k${i}` && !badKey) badKey = `key ${message.key} for message ${i}`;
        got.set(i, v);
        await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
      },
    });
    const deadline = Date.now() + STEP_MS;
    for (let n = 0; n < 300 && got.size < TOTAL && Date.now() < deadline; n++) await sleep(100);
  } finally {
    await consumer.disconnect();
  }
  if (badKey) throw new Error(badKey);
  if (got.size !== want.size) throw new Error(`consumed ${got.size} distinct messages, want ${want.size}`);
  for (const [i, v] of want) if (got.get(i) !== v) throw new Error(`message ${i}: got ${got.get(i)}, want ${v}`);
  const offs = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const sum = offs[0].partitions.reduce((s, p) => s + Math.max(0, parseInt(p.offset, 10)), 0);
  if (sum !== TOTAL) throw new Error(`committed offsets sum to ${sum}, want ${TOTAL}: ${JSON.stringify(offs)}`);
  return `${got.size} msgs checked, group ${group} committed ${TOTAL}`;
}

async function describe() {
  const r = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
  const res = r.resources[0];
  if (res.errorCode) throw new Error(`describeConfigs error ${res.errorCode} ${res.errorMessage}`);
  const out = {};
  for (const e of res.configEntries) out[e.configName] = e.configValue;
  return out;
}

async function configs() {
  let cfg = await describe();
  if (cfg['retention.ms'] !== RETENTION || cfg['max.message.bytes'] !== MAX_MESSAGE_BYTES) {
    throw new Error(`describe: retention.ms=${cfg['retention.ms']} max.message.bytes=${cfg['max.message.bytes']}`);
  }
  // kafkajs has no IncrementalAlterConfigs: the classic AlterConfigs replaces
  // the topic's whole config set, so both keys are sent.
  await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic,
    configEntries: [{ name: 'retention.ms', value: ALTERED }, { name: 'max.message.bytes', value: MAX_MESSAGE_BYTES }] }] });
  cfg = await describe();
  if (cfg['retention.ms'] !== ALTERED || cfg['max.message.bytes'] !== MAX_MESSAGE_BYTES) {
    throw new Error(`after alterConfigs: retention.ms=${cfg['retention.ms']} max.message.bytes=${cfg['max.message.bytes']}`);
  }
  return `retention.ms=3600000 described; (non-incremental) AlterConfigs retention.ms=${ALTERED} described; kafkajs has no IncrementalAlterConfigs`;
}

async function p0() {
  const offs = await admin.fetchTopicOffsets(topic);
  return offs.find((o) => o.partition === 0);
}

async function deleteRecords() {
  const before = await p0();
  const hw = parseInt(before.high, 10);
  if (hw < 2) throw new Error(`partition 0 high watermark ${hw}, need >= 2`);
  const target = Math.floor(hw / 2);
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: String(target) }] });
  const after = await p0();
  const low = parseInt(after.low, 10);
  if (low !== target) throw new Error(`after deleteTopicRecords(${target}): ListOffsets earliest ${low}`);
  return `p0 deleted below ${target} (hw ${hw}); ListOffsets earliest=${low}`;
}

async function deleteTopic() {
  await admin.deleteTopics({ topics: [topic], timeout: 10000 });
  const deadline = Date.now() + STEP_MS;
  for (let n = 0; n < 100 && Date.now() < deadline; n++) {
    if (!(await admin.listTopics()).includes(topic)) return 'gone from listTopics';
    await sleep(200);
  }
  throw new Error(`${topic} still listed after delete`);
}

(async () => {
  try {
    await withTimeout(admin.connect(), STEP_MS, 'admin connect');
  } catch (e) {
    report('create', 'FAIL', `client setup: ${e.message}`);
    process.exit(0);
  }
  await step('create', create);
  await step('produce', produce);
  await step('consume', consume);
  await step('configs', configs);
  await step('delete-records', deleteRecords);
  await step('delete-topic', deleteTopic);
  await admin.disconnect().catch(() => {});
  process.exit(0);
})();
