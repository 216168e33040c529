#!/usr/bin/env node
// Drives the FHIR door with fhir-kit-client (a FHIR client library nobody
// here wrote) and prints one JSON line per step:
//   {"step": "...", "status": 201, "location": "...", "body": {...}}
// or, when the server answered an error (the library throws):
//   {"step": "...", "status": 422, "error": true, "body": {OperationOutcome}}
//
// Steps, in order:
//   metadata       client.capabilityStatement()           (GET  [base]/metadata)
//   create         client.create(Observation)              (POST [base]/Observation)
//   conditional-1  client.create(..., If-None-Exist)       (first: 201)
//   conditional-2  the same again                          (repeat: 200)
//   invalid        client.create(Observation without status) (422)
//   transaction    client.transaction(Bundle)              (POST [base]/)
//
// usage: node fhir_client.js --modules DIR --base URL --token TOKEN
//          --observation OBS.json --conditional OBS.json --invalid OBS.json
//          --bundle BUNDLE.json
//
// DIR holds node_modules/fhir-kit-client (installed by
// tests/interop/setup_fhir.sh). Exit codes: 0 every step got an HTTP
// answer, 2 usage, 3 a step failed without one (connection, timeout, a
// library error).
'use strict';

const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith('--') || i + 1 >= argv.length) {
      console.error(`fhir_client.js: bad argument ${k}`);
      process.exit(2);
    }
    out[k.slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
for (const k of ['modules', 'base', 'token', 'observation', 'conditional', 'invalid', 'bundle']) {
  if (!args[k]) {
    console.error(`fhir_client.js: --${k} is required`);
    process.exit(2);
  }
}
const readJson = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));

function print(step, result) {
  console.log(JSON.stringify({ step, ...result }));
}

async function main() {
  const entry = path.join(path.resolve(args.modules), 'node_modules', 'fhir-kit-client', 'dist', 'index.js');
  const { Client } = await import(pathToFileURL(entry).href);
  const client = new Client({ baseUrl: args.base, bearerToken: args.token });

  // One step: the library call; status and Location from the raw response
  // the library keeps with every result (Client.httpFor).
  async function step(name, call) {
    try {
      const body = await call();
      const { response } = Client.httpFor(body);
      print(name, {
        status: response ? response.status : null,
        location: response ? response.headers.get('location') : null,
        contentType: response ? response.headers.get('content-type') : null,
        body,
      });
    } catch (e) {
      if (e && e.response && typeof e.response.status === 'number') {
        print(name, { status: e.response.status, error: true, body: e.response.data });
        return;
      }
      console.error(`fhir_client.js: step ${name} failed: ${e && e.stack ? e.stack : e}`);
      process.exit(3);
    }
  }

  const conditional = readJson(args.conditional);
  const ident = conditional.identifier[0];
  const ifNoneExist = { headers: { 'If-None-Exist': `identifier=${ident.system}|${ident.value}` } };

  await step('metadata', () => client.capabilityStatement());
  await step('create', () => client.create({ resourceType: 'Observation', body: readJson(args.observation) }));
  await step('conditional-1', () =>
    client.create({ resourceType: 'Observation', body: conditional, options: ifNoneExist }));
  await step('conditional-2', () =>
    client.create({ resourceType: 'Observation', body: conditional, options: ifNoneExist }));
  await step('invalid', () => client.create({ resourceType: 'Observation', body: readJson(args.invalid) }));
  await step('transaction', () => client.transaction({ body: readJson(args.bundle) }));
}

const timer = setTimeout(() => {
  console.error('fhir_client.js: timed out after 45 s');
  process.exit(3);
}, 45000);
main().then(
  () => {
    clearTimeout(timer);
    // fhir-kit-client keeps keep-alive sockets open: do not wait for them.
    process.exit(0);
  },
  (e) => {
    console.error(`fhir_client.js: ${e && e.stack ? e.stack : e}`);
    process.exit(3);
  },
);
