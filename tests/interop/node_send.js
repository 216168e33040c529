#!/usr/bin/env node
// Sends HL7 messages with node-hl7-client (a client nobody here wrote) over
// ONE kept connection, waiting for each ACK before sending the next, and
// prints one JSON line per ACK: {"msa1": "...", "msa2": "..."}.
//
// usage: node node_send.js --modules DIR --port PORT --messages FILE.json
//          [--host 127.0.0.1] [--ca CA.pem --cert CERT.pem --key KEY.pem
//           --servername localhost] [--timeout-ms 30000]
//
// FILE.json is a JSON array of messages (segments separated by \r).
// DIR is the folder holding node_modules/node-hl7-client (installed by
// tests/interop/setup.sh). Exit codes: 0 all ACKs received, 2 usage,
// 3 timeout or connection error.
'use strict';

const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith('--') || i + 1 >= argv.length) {
      console.error(`node_send.js: bad argument ${k}`);
      process.exit(2);
    }
    out[k.slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (!args.modules || !args.port || !args.messages) {
  console.error('usage: node node_send.js --modules DIR --port PORT --messages FILE.json [...]');
  process.exit(2);
}

const hl7 = require(path.join(path.resolve(args.modules), 'node_modules', 'node-hl7-client'));
const { Client, Message } = hl7;

const messages = JSON.parse(fs.readFileSync(args.messages, 'utf8'));
const timeoutMs = Number(args['timeout-ms'] || 30000);

const options = { host: args.host || '127.0.0.1' };
if (args.ca || args.cert || args.key) {
  options.tls = {
    ca: args.ca ? fs.readFileSync(args.ca) : undefined,
    cert: args.cert ? fs.readFileSync(args.cert) : undefined,
    key: args.key ? fs.readFileSync(args.key) : undefined,
    servername: args.servername || 'localhost',
    rejectUnauthorized: true,
  };
}

const client = new Client(options);
let next = 0;
let acked = 0;
let finished = false;

function fail(why) {
  if (finished) return;
  finished = true;
  console.error(`node_send.js: ${why} (${acked}/${messages.length} ACKs received)`);
  process.exit(3);
}

const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);

function sendNext(conn) {
  const text = messages[next++];
  conn.sendMessage(new Message({ text })).catch((e) => fail(`send failed: ${e}`));
}

const conn = client.createConnection({ port: Number(args.port), waitAck: true }, async (res) => {
  const msg = res.getMessage();
  const line = {
    msa1: msg.get('MSA.1').toString(),
    msa2: msg.get('MSA.2').toString(),
  };
  process.stdout.write(JSON.stringify(line) + '\n');
  acked += 1;
  if (acked === messages.length) {
    finished = true;
    clearTimeout(timer);
    await conn.close();
    process.exit(0);
  } else if (next < messages.length) {
    sendNext(conn);
  }
});

// Send the first message only once connected: sending earlier makes the
// library queue it and open a second socket.
conn.once('connect', () => {
  if (messages.length === 0) {
    finished = true;
    process.exit(0);
  }
  sendNext(conn);
});
conn.on('client.error', (e) => fail(`connection error: ${e && e.message ? e.message : e}`));
conn.on('data.error', (e) => fail(`could not parse an answer: ${e && e.message ? e.message : e}`));
