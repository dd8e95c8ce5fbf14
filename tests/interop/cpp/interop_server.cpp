// A C++ interop server on bindings/cpp/plexus.hpp: grpc.testing.TestService and
// BenchmarkService from the public interop test description, for plexus's interop matrix
// (scripts/test-interop.sh), with the messages of proto.hpp instead of a protobuf library.
//
//   interop_server --port=PORT [--use_tls=true [--tls_cert_file=PEM --tls_key_file=PEM]]
//
// Prints "interop_server.cpp: listening on port N" once serving (--port=0 picks a free port).
// With --use_tls=true it presents the certificate chain and key given, by default server.pem
// and server.key in the directory $PLEXUS_INTEROP_CERTS names (as interop/src/features.rs
// reads them). SIGTERM or SIGINT shuts it down, calls in flight getting SHUTDOWN_GRACE_MS.
//
// CompressedRequest: a request with expect_compressed set that arrived uncompressed is
// answered INVALID_ARGUMENT (the other way round is fine: clients may not be able to send one
// message of a compressed stream uncompressed, as grpc's interop servers allow). CompressedResponse: a unary call compresses its response when response_compressed is true, a streaming call
// compresses (gzip) and sends each message uncompressed unless its `compressed` is true.
// UnimplementedService is not registered, so calls to it get UNIMPLEMENTED from plexus.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "plexus.hpp"
#include "proto.hpp"

namespace {

const char *const ECHO_INITIAL = "x-grpc-test-echo-initial";
const char *const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";
const char *const SERVER_ID = "plexus-cpp-interop";
const char *const TEST = "/grpc.testing.TestService/";
const char *const BENCH = "/grpc.testing.BenchmarkService/";
/// How long calls in flight may run on after SIGTERM or SIGINT.
constexpr std::int64_t SHUTDOWN_GRACE_MS = 5000;
/// Handler threads: each holds one call at a time, and the interop cases run at most a few
/// streams at once next to the 1000 quick unary calls of concurrent_large_unary.
constexpr std::size_t HANDLER_THREADS = 16;
/// The algorithm the interop cases compress with.
const char *const ALGORITHM = "gzip";

using plexus::Bytes;
using plexus::ServerContext;
using plexus::ServerStatus;
namespace code = plexus::code;

/// Decodes a request into `out`; throws INTERNAL (grpc's answer to an unparsable message).
template <typename T>
void parse(const Bytes &message, T &out) {
    if (!proto::decode(message.view(), out)) {
        throw plexus::ServerError(code::internal, "the request message could not be parsed");
    }
}

Bytes bytes_of(const std::string &encoded) { return Bytes::copy(encoded); }

/// Echo Metadata: the request's entries of `key`, into `to`.
void echo(const ServerContext &ctx, const char *key, plexus::Metadata &to) {
    auto md = ctx.metadata();
    std::size_t n = md.size();
    for (std::size_t i = 0; i < n; i++) {
        auto e = md.entry(i);
        if (e.key != key) continue;
        if (e.binary) {
            to.append_bin(key, e.value);
        } else {
            to.append(key, std::string(e.value));
        }
    }
}

/// Echo Metadata for every method: the trailing entries go into the trailers, the initial
/// ones out now when there are any (else the headers go out with the first message).
void echo_metadata(ServerContext &ctx) {
    echo(ctx, ECHO_TRAILING, ctx.trailers());
    auto initial = plexus::Metadata::create();
    echo(ctx, ECHO_INITIAL, initial);
    if (initial.read().size() > 0) ctx.send_initial_metadata(initial);
}

/// Echo Status: the status the request asks for; std::nullopt for none or code 0.
std::optional<ServerStatus> echo_status(const std::optional<proto::EchoStatus> &status) {
    if (!status || status->code == 0) return std::nullopt;
    return ServerStatus(status->code, status->message);
}

/// Only COMPRESSABLE payloads exist; a negative size is no size.
void check_response(std::int32_t type, std::int32_t size) {
    if (type != 0) {
        throw plexus::ServerError(code::invalid_argument,
                                  "unsupported response_type " + std::to_string(type));
    }
    if (size < 0) {
        throw plexus::ServerError(code::invalid_argument,
                                  "response size " + std::to_string(size) + " is negative");
    }
}

/// Waits `interval_us`, or throws CANCELLED if the call ends first.
void pause(std::int32_t interval_us, const ServerContext &ctx) {
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(interval_us);
    while (std::chrono::steady_clock::now() < until) {
        if (ctx.is_cancelled()) {
            throw plexus::ServerError(code::cancelled, "the call ended while the server paused");
        }
        auto left = until - std::chrono::steady_clock::now();
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
            left, std::chrono::milliseconds(10)));
    }
}

/// Sends the responses one StreamingOutputCallRequest asks for; false once the call is over.
bool send_responses(const proto::StreamingOutputCallRequest &req, const ServerContext &ctx,
                    plexus::ServerWriter &writer) {
    check_response(req.response_type, 0);
    for (const auto &params : req.response_parameters) {
        check_response(0, params.size);
        pause(params.interval_us, ctx);
        std::uint32_t flags = params.compressed == true ? 0 : PLEXUS_SEND_NO_COMPRESS;
        if (!writer.write(bytes_of(proto::encode_output_response(proto::zeros(params.size))),
                          flags)) {
            return false;
        }
    }
    return true;
}

/// The call ended under the handler (cancelled, deadline): this status goes nowhere.
ServerStatus over() { return ServerStatus(code::cancelled, "the call is over"); }

// ---- TestService ----------------------------------------------------------------------------

ServerStatus empty_call(ServerContext &ctx, const Bytes &, Bytes &response) {
    echo_metadata(ctx);
    response = Bytes::copy("");
    return {};
}

/// CompressedRequest: INVALID_ARGUMENT when a message expected compressed was not.
std::optional<ServerStatus> check_compressed(const ServerContext &ctx,
                                             const std::optional<bool> &expect) {
    if (!expect.value_or(false) || ctx.last_message_compressed()) return std::nullopt;
    return ServerStatus(code::invalid_argument, "expected a compressed request");
}

ServerStatus unary_call(ServerContext &ctx, const Bytes &request, Bytes &response) {
    proto::SimpleRequest req;
    parse(request, req);
    if (auto status = check_compressed(ctx, req.expect_compressed)) return std::move(*status);
    if (req.response_compressed) ctx.set_compression(*req.response_compressed ? ALGORITHM : "identity");
    echo_metadata(ctx);
    if (auto status = echo_status(req.response_status)) return std::move(*status);
    check_response(req.response_type, req.response_size);
    proto::SimpleResponse resp;
    resp.payload = proto::zeros(req.response_size);
    if (req.fill_server_id) resp.server_id = SERVER_ID;
    response = bytes_of(proto::encode(resp));
    return {};
}

ServerStatus cacheable_unary_call(ServerContext &ctx, const Bytes &request, Bytes &response) {
    proto::SimpleRequest req;
    parse(request, req);
    echo(ctx, ECHO_TRAILING, ctx.trailers());
    auto initial = plexus::Metadata::create();
    echo(ctx, ECHO_INITIAL, initial);
    initial.append("cache-control", "public, max-age=60");
    ctx.send_initial_metadata(initial);
    auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    proto::SimpleResponse resp;
    resp.payload = proto::Payload{0, std::to_string(nanos)};
    response = bytes_of(proto::encode(resp));
    return {};
}

ServerStatus streaming_output_call(ServerContext &ctx, const Bytes &request,
                                   plexus::ServerWriter &writer) {
    proto::StreamingOutputCallRequest req;
    parse(request, req);
    ctx.set_compression(ALGORITHM);
    echo_metadata(ctx);
    if (auto status = echo_status(req.response_status)) return std::move(*status);
    if (!send_responses(req, ctx, writer)) return over();
    return {};
}

ServerStatus streaming_input_call(ServerContext &ctx, plexus::ServerReader &reader,
                                  Bytes &response) {
    echo_metadata(ctx);
    std::int64_t total = 0;
    Bytes message;
    while (reader.read(message)) {
        proto::StreamingInputCallRequest req;
        parse(message, req);
        if (auto status = check_compressed(ctx, req.expect_compressed)) return std::move(*status);
        if (req.payload) total += static_cast<std::int64_t>(req.payload->body.size());
    }
    if (ctx.is_cancelled()) return over();
    if (total > INT32_MAX) {
        return ServerStatus(code::invalid_argument, "aggregated payload size " +
                                                        std::to_string(total) +
                                                        " does not fit an int32");
    }
    response = bytes_of(proto::encode_input_response(static_cast<std::int32_t>(total)));
    return {};
}

ServerStatus full_duplex_call(ServerContext &ctx, plexus::ServerReader &reader,
                              plexus::ServerWriter &writer) {
    ctx.set_compression(ALGORITHM);
    echo_metadata(ctx);
    Bytes message;
    while (reader.read(message)) {
        proto::StreamingOutputCallRequest req;
        parse(message, req);
        if (auto status = echo_status(req.response_status)) return std::move(*status);
        if (!send_responses(req, ctx, writer)) return over();
    }
    return {};
}

ServerStatus half_duplex_call(ServerContext &ctx, plexus::ServerReader &reader,
                              plexus::ServerWriter &writer) {
    ctx.set_compression(ALGORITHM);
    echo_metadata(ctx);
    std::vector<proto::StreamingOutputCallRequest> buffered;
    Bytes message;
    while (reader.read(message)) {
        buffered.emplace_back();
        parse(message, buffered.back());
    }
    for (const auto &req : buffered) {
        if (auto status = echo_status(req.response_status)) return std::move(*status);
        if (!send_responses(req, ctx, writer)) return over();
    }
    return {};
}

ServerStatus unimplemented_call(ServerContext &, const Bytes &, Bytes &) {
    return ServerStatus(code::unimplemented,
                        "grpc.testing.TestService/UnimplementedCall is not implemented, on purpose");
}

// ---- BenchmarkService -----------------------------------------------------------------------

/// The response a benchmark request asks for.
Bytes bench_response(const Bytes &request) {
    proto::SimpleRequest req;
    parse(request, req);
    check_response(req.response_type, req.response_size);
    proto::SimpleResponse resp;
    resp.payload = proto::zeros(req.response_size);
    return bytes_of(proto::encode(resp));
}

ServerStatus bench_unary(ServerContext &, const Bytes &request, Bytes &response) {
    response = bench_response(request);
    return {};
}

ServerStatus bench_streaming(ServerContext &, plexus::ServerReader &reader,
                             plexus::ServerWriter &writer) {
    Bytes message;
    while (reader.read(message)) {
        if (!writer.write(bench_response(message))) return over();
    }
    return {};
}

ServerStatus bench_from_client(ServerContext &, plexus::ServerReader &reader, Bytes &response) {
    Bytes message;
    Bytes last = Bytes::copy("");
    while (reader.read(message)) last = std::move(message);
    response = bench_response(last);
    return {};
}

/// Sends the one response until the client cancels.
ServerStatus bench_from_server(ServerContext &ctx, const Bytes &request,
                               plexus::ServerWriter &writer) {
    Bytes response = bench_response(request);
    while (!ctx.is_cancelled()) {
        if (!writer.write(response)) break;
    }
    return over();
}

/// Sends the response the first request asks for until the client half-closes or cancels.
ServerStatus bench_both_ways(ServerContext &ctx, plexus::ServerReader &reader,
                             plexus::ServerWriter &writer) {
    Bytes first;
    if (!reader.read(first)) return {};
    Bytes response = bench_response(first);
    std::atomic<bool> half_closed{false};
    std::thread drain([&reader, &half_closed] {
        Bytes ignored;
        try {
            while (reader.read(ignored)) {
            }
        } catch (const plexus::Error &) {
            // The request stream failed: the call is over, which ends the writer below too.
        }
        half_closed = true;
    });
    while (!half_closed && !ctx.is_cancelled()) {
        if (!writer.write(response)) break;
    }
    drain.join();
    return {};
}

// ---- flags ----------------------------------------------------------------------------------

const char *const USAGE =
    "usage: interop_server --port=PORT [--use_tls=false] [--tls_cert_file=PEM "
    "--tls_key_file=PEM (default: $PLEXUS_INTEROP_CERTS/server.pem, server.key)]";

struct Flags {
    int port = -1;
    bool use_tls = false;
    std::string cert_file;
    std::string key_file;
};

/// Parses "--name=value" and "--name value"; throws std::runtime_error saying what is wrong.
Flags parse_flags(int argc, char **argv) {
    Flags flags;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg.rfind("--", 0) != 0) throw std::runtime_error("unexpected argument " + arg);
        std::string name = arg.substr(2);
        std::string value;
        auto eq = name.find('=');
        if (eq != std::string::npos) {
            value = name.substr(eq + 1);
            name.resize(eq);
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            throw std::runtime_error("--" + name + " needs a value");
        }
        if (name == "port") {
            char *end = nullptr;
            long port = std::strtol(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || port < 0 || port > 65535) {
                throw std::runtime_error("--port must be 0..65535, not " + value);
            }
            flags.port = static_cast<int>(port);
        } else if (name == "use_tls") {
            if (value != "true" && value != "false") {
                throw std::runtime_error("--use_tls must be true or false, not " + value);
            }
            flags.use_tls = value == "true";
        } else if (name == "tls_cert_file") {
            flags.cert_file = value;
        } else if (name == "tls_key_file") {
            flags.key_file = value;
        } else {
            throw std::runtime_error("unknown flag --" + name);
        }
    }
    if (flags.port < 0) throw std::runtime_error("--port is required");
    return flags;
}

/// `given`, else `name` in $PLEXUS_INTEROP_CERTS, read whole.
std::string read_pem(const std::string &given, const char *flag, const char *name) {
    std::string path = given;
    if (path.empty()) {
        const char *dir = std::getenv("PLEXUS_INTEROP_CERTS");
        if (dir == nullptr || *dir == '\0') {
            throw std::runtime_error(std::string("--use_tls=true needs ") + flag +
                                     ", or PLEXUS_INTEROP_CERTS naming a directory with " + name);
        }
        path = std::string(dir) + "/" + name;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
            std::puts(USAGE);
            return 0;
        }
    }
    Flags flags;
    try {
        flags = parse_flags(argc, argv);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "interop_server.cpp: %s\n%s\n", e.what(), USAGE);
        return 2;
    }
    // Blocked before any thread starts, so every thread inherits the mask and sigwait below
    // is the one place the signals arrive.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    try {
        std::optional<plexus::ServerTls> tls;
        if (flags.use_tls) {
            tls = plexus::ServerTls::create(read_pem(flags.cert_file, "--tls_cert_file", "server.pem"),
                                            read_pem(flags.key_file, "--tls_key_file", "server.key"));
        }
        auto server = plexus::Server::create();
        std::string t = TEST, b = BENCH;
        server.unary(t + "EmptyCall", empty_call)
            .unary(t + "UnaryCall", unary_call)
            .unary(t + "CacheableUnaryCall", cacheable_unary_call)
            .server_streaming(t + "StreamingOutputCall", streaming_output_call)
            .client_streaming(t + "StreamingInputCall", streaming_input_call)
            .bidi_streaming(t + "FullDuplexCall", full_duplex_call)
            .bidi_streaming(t + "HalfDuplexCall", half_duplex_call)
            .unary(t + "UnimplementedCall", unimplemented_call)
            .unary(b + "UnaryCall", bench_unary)
            .bidi_streaming(b + "StreamingCall", bench_streaming)
            .client_streaming(b + "StreamingFromClient", bench_from_client)
            .server_streaming(b + "StreamingFromServer", bench_from_server)
            .bidi_streaming(b + "StreamingBothWays", bench_both_ways);
        const plexus::ServerTls *tls_ptr = tls ? &*tls : nullptr;
        std::string port = std::to_string(flags.port);
        int bound = 0;
        // Every interface, as interop servers do: IPv6 (dual-stack on Linux), else IPv4 alone.
        try {
            bound = server.add_listener("[::]:" + port, tls_ptr);
        } catch (const plexus::Error &) {
            bound = server.add_listener("0.0.0.0:" + port, tls_ptr);
        }
        server.start(HANDLER_THREADS);
        std::printf("interop_server.cpp: listening on port %d (%s)\n", bound,
                    flags.use_tls ? "TLS" : "plaintext");
        std::fflush(stdout);
        int received = 0;
        sigwait(&signals, &received);
        server.shutdown(SHUTDOWN_GRACE_MS);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "interop_server.cpp: %s\n", e.what());
        return 1;
    }
    return 0;
}
