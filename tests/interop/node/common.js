'use strict';
// The interop protos (interop/proto), loaded at run time by @grpc/proto-loader: no generated
// code. Field names keep their proto spelling; enums are numbers; unset message fields are null.

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'interop', 'proto');

function load() {
  const definition = protoLoader.loadSync(['test.proto', 'benchmark_service.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).grpc.testing;
}

/** Flags as gRPC interop binaries take them: --name=value, --name value, or --name alone. */
function parseFlags(argv, known, booleans) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    let [name, value] = arg.slice(2).split(/=(.*)/s, 2);
    if (value === undefined) {
      const next = argv[i + 1];
      if (booleans.includes(name) && !['true', 'false', '1', '0'].includes(next)) {
        value = 'true';
      } else if (next === undefined) {
        throw new Error(`--${name} needs a value`);
      } else {
        value = next;
        i++;
      }
    }
    if (!known.includes(name)) throw new Error(`unknown flag --${name}`);
    flags[name] = value;
  }
  return flags;
}

function boolFlag(flags, name) {
  const value = flags[name];
  if (value === undefined) return false;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new Error(`--${name} must be true or false, not ${JSON.stringify(value)}`);
}

module.exports = { grpc, load, parseFlags, boolFlag };
