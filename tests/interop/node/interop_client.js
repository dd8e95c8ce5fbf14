'use strict';
// A grpc-js interop client: the cases of the public interop test description, written for
// plexus's interop matrix.
//
//   node interop_client.js --server_host=H --server_port=N --test_case=NAME
//       [--use_tls=true --use_test_ca=true --ca_file=F --server_host_override=NAME]
//
// Prints "PASS <case>" and exits 0, or "FAIL <case>: <why>" and exits 1; 2 for bad flags.
//
// grpc-js compresses per channel only and cannot show a received message's compressed flag:
// the compressed requests go through a second, compressing channel; client_compressed_streaming
// sends both of its messages compressed; server_compressed_* check sizes only (the description
// allows that).

const fs = require('fs');
const { grpc, load, parseFlags, boolFlag } = require('./common');

const testing = load();
const LARGE_REQUEST = 271828;
const LARGE_RESPONSE = 314159;
const REQUEST_SIZES = [27182, 8, 1828, 45904];
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const ECHO_INITIAL = ['x-grpc-test-echo-initial', 'test_initial_metadata_value'];
const ECHO_TRAILING = ['x-grpc-test-echo-trailing-bin', Buffer.from([0xab, 0xab, 0xab])];
const CONCURRENT_CALLS = 1000;
const COMPRESSABLE = 0;
const GZIP = 2;
// A generous bound on every call that should succeed, so a hang fails instead of blocking.
const CALL_TIMEOUT_MS = 120000;

class CaseFailed extends Error {}

function check(cond, why) {
  if (!cond) throw new CaseFailed(why);
}

function zeros(size) {
  return { type: COMPRESSABLE, body: Buffer.alloc(size) };
}

function checkPayload(step, payload, size) {
  const body = payload ? payload.body : Buffer.alloc(0);
  check(body.length === size, `${step}: payload body is ${body.length} bytes, want ${size}`);
  check(body.every((b) => b === 0), `${step}: payload body is not all zeros`);
  check(!payload || payload.type === COMPRESSABLE, `${step}: payload type ${payload && payload.type}`);
}

function largeRequest(extra = {}) {
  return { response_type: COMPRESSABLE, response_size: LARGE_RESPONSE, payload: zeros(LARGE_REQUEST), ...extra };
}

function outputRequest(sizes, payloadSize, extra = {}) {
  return {
    response_type: COMPRESSABLE,
    response_parameters: sizes.map((size) => ({ size })),
    payload: payloadSize === undefined ? null : zeros(payloadSize),
    ...extra,
  };
}

function options(timeoutMs = CALL_TIMEOUT_MS) {
  return { deadline: Date.now() + timeoutMs };
}

function codeName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

/** Resolves with an error that must have `code` (and `message`, when given). */
async function expectError(step, promise, code, message) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    if (err instanceof CaseFailed) throw err;
    check(err.code === code, `${step}: got ${codeName(err.code)} ${JSON.stringify(err.details)}, want ${codeName(code)}`);
    if (message !== undefined) {
      check(err.details === message, `${step}: status message ${JSON.stringify(err.details)}, want ${JSON.stringify(message)}`);
    }
    return;
  }
  throw new CaseFailed(`${step}: succeeded, want ${codeName(code)}`);
}

/** A unary call: resolves { response, initial, trailing }. */
function unary(client, method, request, metadata = new grpc.Metadata(), opts = options()) {
  return new Promise((resolve, reject) => {
    let initial = null;
    let response = null;
    let error = null;
    const call = client[method](request, metadata, opts, (err, res) => {
      error = err;
      response = res;
    });
    call.on('metadata', (md) => (initial = md));
    call.on('status', (st) => {
      if (error) reject(error);
      else resolve({ response, initial, trailing: st.metadata });
    });
  });
}

/** A client-streaming call over `requests`: resolves the response. */
function clientStream(client, requests, opts = options()) {
  return new Promise((resolve, reject) => {
    const call = client.StreamingInputCall(opts, (err, res) => (err ? reject(err) : resolve(res)));
    for (const r of requests) call.write(r);
    call.end();
  });
}

/** Reads a response stream to its end: resolves { responses, initial, trailing }. */
function readStream(call) {
  return new Promise((resolve, reject) => {
    const responses = [];
    let initial = null;
    call.on('metadata', (md) => (initial = md));
    call.on('data', (r) => responses.push(r));
    call.on('error', reject);
    call.on('status', (st) => {
      if (st.code === grpc.status.OK) resolve({ responses, initial, trailing: st.metadata });
    });
  });
}

/** The next message of a stream (or its error). */
function nextMessage(call) {
  return new Promise((resolve, reject) => {
    const onData = (msg) => {
      call.off('error', onError);
      call.pause();
      resolve(msg);
    };
    const onError = (err) => {
      call.off('data', onData);
      reject(err);
    };
    call.once('data', onData);
    call.once('error', onError);
    call.resume();
  });
}

function checkEchoed(step, initial, trailing) {
  const got = initial ? initial.get(ECHO_INITIAL[0]) : [];
  check(got.length === 1 && got[0] === ECHO_INITIAL[1], `${step}: initial metadata lacks ${ECHO_INITIAL[0]} (got ${JSON.stringify(got)})`);
  const bin = trailing ? trailing.get(ECHO_TRAILING[0]) : [];
  check(bin.length === 1 && Buffer.compare(bin[0], ECHO_TRAILING[1]) === 0, `${step}: trailing metadata lacks ${ECHO_TRAILING[0]}=0xababab`);
}

function echoMetadata() {
  const md = new grpc.Metadata();
  md.add(...ECHO_INITIAL);
  md.add(...ECHO_TRAILING);
  return md;
}

function cases(target, credentials, channelOptions) {
  const stub = new testing.TestService(target, credentials, channelOptions);
  const gzipOptions = { ...channelOptions, 'grpc.default_compression_algorithm': GZIP };
  const compressing = () => new testing.TestService(target, credentials, gzipOptions);
  const bench = () => new testing.BenchmarkService(target, credentials, channelOptions);

  return {
    async empty_unary() {
      const { response } = await unary(stub, 'EmptyCall', {});
      check(response !== null && typeof response === 'object', 'no response');
    },

    async large_unary() {
      const { response } = await unary(stub, 'UnaryCall', largeRequest());
      checkPayload('UnaryCall', response.payload, LARGE_RESPONSE);
    },

    async client_compressed_unary() {
      const probe = largeRequest({ expect_compressed: { value: true } });
      await expectError('probe (uncompressed, expect_compressed=true)', unary(stub, 'UnaryCall', probe), grpc.status.INVALID_ARGUMENT);
      const { response } = await unary(compressing(), 'UnaryCall', probe);
      checkPayload('compressed call', response.payload, LARGE_RESPONSE);
      const plain = await unary(stub, 'UnaryCall', largeRequest({ expect_compressed: { value: false } }));
      checkPayload('uncompressed call', plain.response.payload, LARGE_RESPONSE);
    },

    async server_compressed_unary() {
      for (const value of [true, false]) {
        const { response } = await unary(stub, 'UnaryCall', largeRequest({ response_compressed: { value } }));
        checkPayload(`response_compressed=${value}`, response.payload, LARGE_RESPONSE);
      }
    },

    async client_streaming() {
      const response = await clientStream(stub, REQUEST_SIZES.map((size) => ({ payload: zeros(size) })));
      check(response.aggregated_payload_size === 74922, `aggregated_payload_size ${response.aggregated_payload_size}`);
    },

    async client_compressed_streaming() {
      const req = (size, value) => ({ payload: zeros(size), expect_compressed: { value } });
      await expectError('probe (uncompressed, expect_compressed=true)', clientStream(stub, [req(27182, true)]), grpc.status.INVALID_ARGUMENT);
      const response = await clientStream(compressing(), [req(27182, true), req(45904, false)]);
      check(response.aggregated_payload_size === 73086, `aggregated_payload_size ${response.aggregated_payload_size}`);
    },

    async server_streaming() {
      const { responses } = await readStream(stub.StreamingOutputCall(outputRequest(RESPONSE_SIZES), options()));
      check(responses.length === 4, `${responses.length} responses, want 4`);
      responses.forEach((r, i) => checkPayload(`response ${i}`, r.payload, RESPONSE_SIZES[i]));
    },

    async server_compressed_streaming() {
      const sizes = [[true, 31415], [false, 92653]];
      const request = { response_parameters: sizes.map(([value, size]) => ({ size, compressed: { value } })) };
      const { responses } = await readStream(stub.StreamingOutputCall(request, options()));
      check(responses.length === 2, `${responses.length} responses, want 2`);
      responses.forEach((r, i) => checkPayload(`response ${i}`, r.payload, sizes[i][1]));
    },

    async ping_pong() {
      const call = stub.FullDuplexCall(options());
      const end = readStreamAfter(call);
      for (let i = 0; i < REQUEST_SIZES.length; i++) {
        call.write(outputRequest([RESPONSE_SIZES[i]], REQUEST_SIZES[i]));
        const msg = await nextMessage(call);
        checkPayload(`ping ${i}`, msg.payload, RESPONSE_SIZES[i]);
      }
      call.end();
      const { responses } = await end();
      check(responses.length === 0, `${responses.length} extra responses`);
    },

    async empty_stream() {
      const call = stub.FullDuplexCall(options());
      const done = readStream(call);
      call.end();
      const { responses } = await done;
      check(responses.length === 0, `${responses.length} responses, want none`);
    },

    async custom_metadata() {
      const u = await unary(stub, 'UnaryCall', largeRequest(), echoMetadata());
      checkPayload('UnaryCall', u.response.payload, LARGE_RESPONSE);
      checkEchoed('UnaryCall', u.initial, u.trailing);
      const call = stub.FullDuplexCall(echoMetadata(), options());
      const done = readStream(call);
      call.write(outputRequest([LARGE_RESPONSE], LARGE_REQUEST));
      call.end();
      const { responses, initial, trailing } = await done;
      check(responses.length === 1, `FullDuplexCall: ${responses.length} responses, want 1`);
      checkPayload('FullDuplexCall', responses[0].payload, LARGE_RESPONSE);
      checkEchoed('FullDuplexCall', initial, trailing);
    },

    async status_code_and_message() {
      const message = 'test status message';
      const status = { code: 2, message };
      await expectError('UnaryCall', unary(stub, 'UnaryCall', { response_status: status }), grpc.status.UNKNOWN, message);
      const call = stub.FullDuplexCall(options());
      const done = readStream(call);
      call.write({ response_status: status });
      call.end();
      await expectError('FullDuplexCall', done, grpc.status.UNKNOWN, message);
    },

    async special_status_message() {
      const message = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';
      await expectError('UnaryCall', unary(stub, 'UnaryCall', { response_status: { code: 2, message } }), grpc.status.UNKNOWN, message);
    },

    async unimplemented_method() {
      await expectError('TestService/UnimplementedCall', unary(stub, 'UnimplementedCall', {}), grpc.status.UNIMPLEMENTED);
    },

    async unimplemented_service() {
      const other = new testing.UnimplementedService(target, credentials, channelOptions);
      await expectError('UnimplementedService/UnimplementedCall', unary(other, 'UnimplementedCall', {}), grpc.status.UNIMPLEMENTED);
    },

    async cancel_after_begin() {
      const result = new Promise((resolve, reject) => {
        const call = stub.StreamingInputCall(options(), (err, res) => (err ? reject(err) : resolve(res)));
        call.cancel();
      });
      await expectError('StreamingInputCall', result, grpc.status.CANCELLED);
    },

    async cancel_after_first_response() {
      const call = stub.FullDuplexCall(options());
      const ended = new Promise((resolve, reject) => call.on('status', (st) => (st.code === grpc.status.OK ? resolve() : reject(st))));
      call.on('error', () => {});
      call.write(outputRequest([31415], 27182));
      const msg = await nextMessage(call);
      checkPayload('first response', msg.payload, 31415);
      call.cancel();
      await expectError('after cancel', ended, grpc.status.CANCELLED);
    },

    async timeout_on_sleeping_server() {
      const call = stub.FullDuplexCall(options(1));
      const done = readStream(call);
      call.write(outputRequest([], 27182));
      await expectError('FullDuplexCall', done, grpc.status.DEADLINE_EXCEEDED);
    },

    async concurrent_large_unary() {
      const calls = [];
      for (let i = 0; i < CONCURRENT_CALLS; i++) {
        calls.push(
          unary(stub, 'UnaryCall', largeRequest()).then(
            ({ response }) => checkPayload(`call ${i}`, response.payload, LARGE_RESPONSE),
          ),
        );
      }
      const results = await Promise.allSettled(calls);
      const failures = results.filter((r) => r.status === 'rejected');
      check(failures.length === 0, `${failures.length} of ${CONCURRENT_CALLS} calls failed; first: ${failures.length && (failures[0].reason.message || failures[0].reason)}`);
    },

    async benchmark_unary() {
      const { response } = await unary(bench(), 'UnaryCall', { response_size: 1024, payload: zeros(512) });
      checkPayload('BenchmarkService/UnaryCall', response.payload, 1024);
    },

    async benchmark_streaming() {
      const call = bench().StreamingCall(options());
      const end = readStreamAfter(call);
      for (const size of [0, 1, 4096, 65536]) {
        call.write({ response_size: size, payload: zeros(Math.floor(size / 2)) });
        checkPayload(`ping ${size}`, (await nextMessage(call)).payload, size);
      }
      call.end();
      const { responses } = await end();
      check(responses.length === 0, `${responses.length} extra responses`);
    },
  };
}

/** For a stream read message by message first: a function that reads the rest to the end. */
function readStreamAfter(call) {
  let status = null;
  let waiter = null;
  call.on('status', (st) => {
    status = st;
    if (waiter) waiter();
  });
  call.on('error', () => {});
  return () =>
    new Promise((resolve, reject) => {
      const responses = [];
      call.on('data', (r) => responses.push(r));
      call.resume();
      const finish = () => (status.code === grpc.status.OK ? resolve({ responses }) : reject(status));
      if (status) finish();
      else waiter = finish;
    });
}

async function main() {
  let flags;
  const known = ['server_host', 'server_port', 'test_case', 'use_tls', 'use_test_ca', 'ca_file', 'server_host_override'];
  try {
    flags = parseFlags(process.argv.slice(2), known, ['use_tls', 'use_test_ca']);
    if (!/^\d+$/.test(flags.server_port || '')) throw new Error('--server_port=PORT is required');
    if (!flags.test_case) throw new Error('--test_case=NAME is required');
  } catch (err) {
    console.error(`interop_client.js: ${err.message}`);
    process.exit(2);
  }
  const host = flags.server_host || 'localhost';
  const target = host.includes(':') && !host.startsWith('[') ? `[${host}]:${flags.server_port}` : `${host}:${flags.server_port}`;
  const channelOptions = {};
  let credentials = grpc.credentials.createInsecure();
  if (boolFlag(flags, 'use_tls')) {
    const roots = boolFlag(flags, 'use_test_ca') ? fs.readFileSync(flags.ca_file) : null;
    credentials = grpc.credentials.createSsl(roots);
    if (flags.server_host_override) channelOptions['grpc.ssl_target_name_override'] = flags.server_host_override;
  }
  if (flags.server_host_override) channelOptions['grpc.default_authority'] = flags.server_host_override;
  const all = cases(target, credentials, channelOptions);
  const run = all[flags.test_case];
  if (!run) {
    console.error(`interop_client.js: unknown test case ${JSON.stringify(flags.test_case)}; known: ${Object.keys(all).join(', ')}`);
    process.exit(2);
  }
  try {
    await run();
  } catch (err) {
    const why = err instanceof CaseFailed ? err.message : `${codeName(err.code)}: ${err.details || err.message}`;
    console.log(`FAIL ${flags.test_case}: ${why}`);
    process.exit(1);
  }
  console.log(`PASS ${flags.test_case}`);
  process.exit(0);
}

main();
