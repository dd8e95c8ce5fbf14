'use strict';
// A grpc-js interop server: grpc.testing.TestService and BenchmarkService, written for plexus's
// interop matrix from the public interop test description.
//
//   node interop_server.js --port=PORT [--use_tls=true --tls_cert_file=F --tls_key_file=F]
//
// Prints "interop_server.js: listening on port N" once serving (--port=0 picks a free port).
//
// grpc-js lets a handler neither see whether a request arrived compressed nor compress one
// call or message: CompressedRequest is not implemented (expect_compressed is ignored) and a
// request for a compressed response fails with UNIMPLEMENTED saying so.

const fs = require('fs');
const { grpc, load, parseFlags, boolFlag } = require('./common');

const testing = load();
const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';
const COMPRESSABLE = 0;

function echoInitial(call) {
  const md = new grpc.Metadata();
  for (const value of call.metadata.get(ECHO_INITIAL)) md.add(ECHO_INITIAL, value);
  return md;
}

function echoTrailing(call) {
  const md = new grpc.Metadata();
  for (const value of call.metadata.get(ECHO_TRAILING)) md.add(ECHO_TRAILING, value);
  return md;
}

/** A gRPC error for callbacks and streams, carrying the echoed trailers. */
function status(code, details, call) {
  return { code, details, metadata: echoTrailing(call) };
}

/** Echo Status: the status the request asks for (code 0 means none). */
function requestedStatus(request, call) {
  const s = request.response_status;
  return s && s.code !== 0 ? status(s.code, s.message, call) : null;
}

function compressionRefused(compressed, call) {
  return compressed && compressed.value
    ? status(grpc.status.UNIMPLEMENTED, 'grpc-js cannot compress a single call or message', call)
    : null;
}

/** The checks every response-shaping request goes through; an error or null. */
function badShape(responseType, sizes, call) {
  if (responseType !== COMPRESSABLE) {
    return status(grpc.status.INVALID_ARGUMENT, `unsupported response_type ${responseType}`, call);
  }
  const negative = sizes.find((size) => size < 0);
  return negative === undefined
    ? null
    : status(grpc.status.INVALID_ARGUMENT, `response size ${negative} is negative`, call);
}

function payload(size) {
  return { type: COMPRESSABLE, body: Buffer.alloc(size) };
}

function sleep(us) {
  return us > 0 ? new Promise((resolve) => setTimeout(resolve, us / 1000)) : Promise.resolve();
}

function sendInitial(call) {
  const md = echoInitial(call);
  if (md.getMap()[ECHO_INITIAL] !== undefined) call.sendMetadata(md);
}

/** Writes the responses one StreamingOutputCallRequest asks for; an error or null. */
async function writeResponses(request, call) {
  const params = request.response_parameters;
  const bad = badShape(request.response_type, params.map((p) => p.size), call);
  if (bad) return bad;
  for (const p of params) {
    const refused = compressionRefused(p.compressed, call);
    if (refused) return refused;
    await sleep(p.interval_us);
    if (call.cancelled) return null;
    call.write({ payload: payload(p.size) });
  }
  return null;
}

/** Collects a client stream's requests; resolves at half-close. */
function readAll(call) {
  return new Promise((resolve, reject) => {
    const requests = [];
    call.on('data', (r) => requests.push(r));
    call.on('end', () => resolve(requests));
    call.on('error', reject);
  });
}

const testService = {
  EmptyCall(call, callback) {
    sendInitial(call);
    callback(null, {}, echoTrailing(call));
  },

  UnaryCall(call, callback) {
    sendInitial(call);
    const req = call.request;
    const error =
      requestedStatus(req, call) ||
      badShape(req.response_type, [req.response_size], call) ||
      compressionRefused(req.response_compressed, call);
    if (error) return callback(error);
    callback(null, { payload: payload(req.response_size) }, echoTrailing(call));
  },

  CacheableUnaryCall(call, callback) {
    const md = echoInitial(call);
    md.set('cache-control', 'public, max-age=60');
    call.sendMetadata(md);
    const body = Buffer.from(String(process.hrtime.bigint()));
    callback(null, { payload: { type: COMPRESSABLE, body } }, echoTrailing(call));
  },

  async StreamingOutputCall(call) {
    sendInitial(call);
    const error = requestedStatus(call.request, call) || (await writeResponses(call.request, call));
    if (error) return call.emit('error', error);
    call.end(echoTrailing(call));
  },

  StreamingInputCall(call, callback) {
    sendInitial(call);
    readAll(call).then(
      (requests) => {
        const total = requests.reduce((sum, r) => sum + (r.payload ? r.payload.body.length : 0), 0);
        callback(null, { aggregated_payload_size: total }, echoTrailing(call));
      },
      () => {}, // cancelled: nothing to answer
    );
  },

  FullDuplexCall(call) {
    sendInitial(call);
    // Requests are answered in order, one at a time; the status ends the call at once.
    let chain = Promise.resolve(null);
    let failed = false;
    call.on('data', (request) => {
      chain = chain.then(async (error) => {
        if (error || failed) return error;
        return requestedStatus(request, call) || (await writeResponses(request, call));
      }).then((error) => {
        if (error && !failed) {
          failed = true;
          call.emit('error', error);
        }
        return error;
      });
    });
    call.on('end', () => {
      chain.then((error) => {
        if (!error) call.end(echoTrailing(call));
      });
    });
    call.on('error', () => {});
  },

  HalfDuplexCall(call) {
    sendInitial(call);
    readAll(call).then(
      async (requests) => {
        for (const request of requests) {
          const error = requestedStatus(request, call) || (await writeResponses(request, call));
          if (error) return call.emit('error', error);
        }
        call.end(echoTrailing(call));
      },
      () => {},
    );
  },
};

const benchmarkService = {
  UnaryCall(call, callback) {
    const bad = badShape(call.request.response_type, [call.request.response_size], call);
    if (bad) return callback(bad);
    callback(null, { payload: payload(call.request.response_size) });
  },

  StreamingCall(call) {
    call.on('data', (request) => {
      const bad = badShape(request.response_type, [request.response_size], call);
      if (bad) return call.emit('error', bad);
      call.write({ payload: payload(request.response_size) });
    });
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
};

function main() {
  let flags;
  try {
    flags = parseFlags(process.argv.slice(2), ['port', 'use_tls', 'tls_cert_file', 'tls_key_file'], ['use_tls']);
    if (flags.port === undefined || !/^\d+$/.test(flags.port)) throw new Error('--port=PORT is required');
  } catch (err) {
    console.error(`interop_server.js: ${err.message}`);
    process.exit(2);
  }
  let credentials = grpc.ServerCredentials.createInsecure();
  if (boolFlag(flags, 'use_tls')) {
    if (!flags.tls_cert_file || !flags.tls_key_file) {
      console.error('interop_server.js: --use_tls=true needs --tls_cert_file and --tls_key_file');
      process.exit(2);
    }
    const pair = { cert_chain: fs.readFileSync(flags.tls_cert_file), private_key: fs.readFileSync(flags.tls_key_file) };
    credentials = grpc.ServerCredentials.createSsl(null, [pair], false);
  }
  const server = new grpc.Server();
  server.addService(testing.TestService.service, testService);
  server.addService(testing.BenchmarkService.service, benchmarkService);
  server.bindAsync(`[::]:${flags.port}`, credentials, (err, port) => {
    if (err) {
      console.error(`interop_server.js: ${err.message}`);
      process.exit(1);
    }
    console.log(`interop_server.js: listening on port ${port}`);
  });
}

main();
