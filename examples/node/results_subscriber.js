#!/usr/bin/env node
// Follow Code Runner's results from another service: one line per finished run and per grade.
//
// It reads coderunner.v1.executions.*.finished and coderunner.v1.executions.*.graded from the
// EXECUTIONS stream through its own durable consumer, and acks each message once it has handled
// it. Payloads are JSON (schemas/json/executions.schema.json describes them).
//
//   npm ci && NATS_URL=nats://127.0.0.1:4222 node results_subscriber.js [--once N] [--durable NAME]
"use strict";

const { parseArgs } = require("node:util");
const { connect } = require("@nats-io/transport-node");
const { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } = require("@nats-io/jetstream");

const STREAM = "EXECUTIONS";
const SUBJECTS = ["coderunner.v1.executions.*.finished", "coderunner.v1.executions.*.graded"];

// One line for a result: the job, what happened, the verdict.
function describe(event) {
  if (event.type === "execution.finished") {
    const line = `${event.jobId} finished ${event.verdict} exit=${event.exitCode} ${event.durationMs}ms`;
    return event.graded ? `${line} (a grade follows)` : line;
  }
  const grade = event.grade;
  return `${event.jobId} graded ${grade.verdict} score=${grade.score} (${grade.passed}/${grade.total})`;
}

async function main() {
  const { values } = parseArgs({
    options: {
      once: { type: "string", default: "0" }, // exit after N results
      durable: { type: "string", default: "example-results" }, // this service's durable consumer
    },
  });
  const once = Number(values.once);
  const nc = await connect({ servers: process.env.NATS_URL || "nats://127.0.0.1:4222", name: values.durable });

  // One durable per service: JetStream remembers what it acked, so a restart resumes where it
  // stopped and nothing is lost while it is down. Created on the first run from new results
  // (DeliverPolicy.All would replay everything the stream still keeps); the same call on later
  // runs leaves it as it is.
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(STREAM, {
    durable_name: values.durable,
    filter_subjects: SUBJECTS,
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.Explicit,
    ack_wait: 30_000_000_000, // nanoseconds
  });
  const consumer = await jetstream(nc).consumers.get(STREAM, values.durable);
  const messages = await consumer.consume({ max_messages: once > 0 ? Math.min(once, 10) : 10 });
  console.error(`listening on ${SUBJECTS.join(", ")} as durable ${values.durable}`);

  let seen = 0;
  for await (const msg of messages) {
    // Delivery is at least once: a redelivered result prints again, so a real service makes this
    // step idempotent (e.g. keyed by jobId and type).
    console.log(describe(msg.json()));
    await msg.ackAck(); // waits for the server: nothing acked is lost when we exit right after
    seen += 1;
    if (once > 0 && seen >= once) break;
  }
  await messages.close();
  await nc.close();
}

module.exports = { describe };

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
