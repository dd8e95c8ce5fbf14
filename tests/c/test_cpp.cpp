// The C++ wrapper (bindings/cpp/plexus.hpp) against the echo server: RAII ownership (moves,
// one free per handle), errors as exceptions, unary, streams, the completion queue.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "common.h"
#include "plexus.hpp"

// Handles are move-only.
static_assert(!std::is_copy_constructible_v<plexus::Channel>);
static_assert(!std::is_copy_assignable_v<plexus::Call>);
static_assert(std::is_nothrow_move_constructible_v<plexus::Bytes>);
static_assert(std::is_nothrow_move_assignable_v<plexus::Status>);

static std::string text_of(const plexus::Bytes &msg) {
    echo_response r = decode_response(msg.get());
    return std::string(reinterpret_cast<const char *>(r.message), r.message_len);
}

static plexus::Bytes request(const char *text) { return plexus::Bytes(request_text(text)); }

/// A file of PLEXUS_TEST_CERTS (scripts/test-c.sh) as a string.
static std::string cert(const char *name) {
    const char *dir = getenv("PLEXUS_TEST_CERTS");
    CHECK(dir != nullptr);
    std::ifstream in(std::string(dir) + "/" + name, std::ios::binary);
    CHECK(in.good());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

/// Waits (up to LONG_MS) for `*counter` to have no other owner than this one.
static bool sole_owner(const std::shared_ptr<int> &counter) {
    for (int i = 0; i < LONG_MS && counter.use_count() != 1; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return counter.use_count() == 1;
}

/// The text of the RpcError `f` throws, checking its code; "" if it throws none.
template <typename F>
static std::string rpc_error(F f, std::int32_t code) {
    try {
        f();
    } catch (const plexus::RpcError &e) {
        CHECK(e.status().code() == code);
        CHECK(std::string(e.what()).find(e.status().message()) != std::string::npos);
        return std::string(e.status().message());
    }
    return "";
}

static std::atomic<int> released{0};
static void on_release(void *) { released++; }

template <typename F>
static plexus_result code_of(F f) {
    try {
        f();
    } catch (const plexus::Error &e) {
        return e.code();
    }
    return PLEXUS_OK;
}

int main() {
    int passed = 0;
    plexus::init();
    auto channel = plexus::Channel::create(test_target());

    {  // Unary with metadata; the reply owns message and status.
        auto md = plexus::Metadata::create();
        md.append("x-echo-a", "1").append_bin("x-echo-b-bin", std::string("\0\1", 2));
        CHECK(md.read().size() == 2);
        auto opts = plexus::CallOptions::create();
        opts.metadata(md).timeout_ms(LONG_MS).wait_for_ready(false).compression("gzip");
        auto reply = channel.unary(UNARY, request("hi"), &opts, LONG_MS);
        CHECK(text_of(reply.message) == "hi");
        CHECK(reply.status.ok() && reply.status.message().empty());
        auto a = reply.status.initial_metadata().get("x-echo-a");
        CHECK(a && *a == "1");
        auto b = reply.status.initial_metadata().get("x-echo-b-bin");
        CHECK(b && *b == std::string("\0\1", 2));
        CHECK(reply.status.trailing_metadata().get("x-trailer") == std::string_view("done"));
        CHECK(reply.status.trailing_metadata().entry(0).key.size() > 0);
        passed++;
    }
    {  // A non-OK status is an RpcError carrying the status.
        echo_request r = {};
        r.status_code = 5;
        r.status_message = "missing";
        bool thrown = false;
        try {
            (void)channel.unary(UNARY, plexus::Bytes(encode_request(&r)));
        } catch (const plexus::RpcError &e) {
            thrown = true;
            CHECK(e.code() == PLEXUS_ERR_RPC && e.status().code() == 5);
            CHECK(e.status().message() == "missing");
            CHECK(e.status().details() == "details:missing");
        }
        CHECK(thrown);
        // Other failures are plexus::Error with their code.
        CHECK(code_of([] { (void)plexus::Channel::create("ipv4:bad"); }) ==
              PLEXUS_ERR_INVALID_ARGUMENT);
        CHECK(code_of([] { plexus::Metadata::create().append("Bad", "v"); }) ==
              PLEXUS_ERR_INVALID_ARGUMENT);
        CHECK(code_of([] { plexus::ChannelOptions::create().max_frame_size(1); }) ==
              PLEXUS_ERR_INVALID_ARGUMENT);
        passed++;
    }
    {  // Moves transfer ownership: each handle is freed once (ASan and valgrind check).
        auto one = plexus::Bytes::copy("abc");
        plexus::Bytes two = std::move(one);
        CHECK(!one && two && two.view() == "abc");
        one = std::move(two);
        CHECK(one.view() == "abc");
        static const char data[] = "wrapped";
        {
            auto w = plexus::Bytes::wrap(data, 7, on_release, nullptr);
            auto moved = std::move(w);
            CHECK(moved.view() == "wrapped");
        }
        CHECK(released == 1);
        passed++;
    }
    {  // Bidi stream.
        auto call = channel.start(BIDI, nullptr, LONG_MS);
        for (int i = 0; i < 5; i++) {
            std::string t = "m" + std::to_string(i);
            call.send(request(t.c_str()), LONG_MS);
            auto msg = call.recv(LONG_MS);
            CHECK(msg && text_of(*msg) == t);
        }
        CHECK(code_of([&] { (void)call.recv(20); }) == PLEXUS_ERR_TIMEOUT);
        call.close_send();
        CHECK(!call.recv(LONG_MS));
        auto status = call.finish(LONG_MS);
        CHECK(status.ok());
        passed++;
    }
    {  // Server streaming, initial metadata, a failed status from finish (no throw).
        echo_request r = {};
        r.message = "s";
        r.count = 3;
        r.status_code = 10;
        r.status_message = "aborted";
        auto md = plexus::Metadata::create();
        md.append("x-echo-k", "v");
        auto opts = plexus::CallOptions::create();
        opts.metadata(md);
        auto call = channel.start_server_streaming(SERVER_STREAM, plexus::Bytes(encode_request(&r)),
                                                   &opts);
        auto initial = call.initial_metadata(LONG_MS);
        CHECK(initial.read().get("x-echo-k") == std::string_view("v"));
        int n = 0;
        while (auto msg = call.recv(LONG_MS)) n++;
        CHECK(n == 3);
        auto status = call.finish();
        CHECK(status.code() == 10 && status.message() == "aborted");
        passed++;
    }
    {  // Cancel.
        echo_request r = {};
        r.count = 5;
        r.delay_ms = 60000;
        auto call = channel.start_server_streaming(SERVER_STREAM, plexus::Bytes(encode_request(&r)));
        CHECK(call.recv(LONG_MS));
        call.cancel();
        CHECK(!call.recv(LONG_MS));
        CHECK(call.finish().code() == 1);
        passed++;
    }
    {  // Completion queue: unary and stream operations with tags.
        auto cq = plexus::CompletionQueue::create();
        CHECK(cq.fd() >= 0);
        CHECK(!cq.next(0));
        for (intptr_t i = 0; i < 10; i++)
            channel.unary_async(UNARY, request("q"), cq, reinterpret_cast<void *>(i));
        std::vector<int> seen(10, 0);
        for (int i = 0; i < 10; i++) {
            auto ev = cq.next(LONG_MS);
            CHECK(ev && ev->op == PLEXUS_OP_UNARY && ev->result == PLEXUS_OK);
            CHECK(text_of(ev->message) == "q" && ev->status.ok());
            seen[reinterpret_cast<intptr_t>(ev->tag)]++;
        }
        for (int s : seen) CHECK(s == 1);

        channel.start_async(BIDI, cq, nullptr);
        auto started = cq.next(LONG_MS);
        CHECK(started && started->op == PLEXUS_OP_START && started->call);
        plexus::Call call = std::move(started->call);
        call.initial_metadata_async(cq, nullptr);
        auto md = cq.next(LONG_MS);
        CHECK(md && md->op == PLEXUS_OP_INITIAL_METADATA && md->metadata);
        call.send_async(request("x"), cq, nullptr);
        CHECK(cq.next(LONG_MS)->op == PLEXUS_OP_SEND);
        call.recv_async(cq, nullptr);
        auto got = cq.next(LONG_MS);
        CHECK(got && got->op == PLEXUS_OP_RECV && text_of(got->message) == "x");
        call.close_send_async(cq, nullptr);
        CHECK(cq.next(LONG_MS)->op == PLEXUS_OP_CLOSE_SEND);
        call.finish_async(cq, nullptr);
        auto done = cq.next(LONG_MS);
        CHECK(done && done->op == PLEXUS_OP_FINISH && done->status.ok());
        cq.shutdown();
        CHECK(code_of([&] { (void)cq.next(LONG_MS); }) == PLEXUS_ERR_SHUTDOWN);
        passed++;
    }
    {  // Options, stats, state, connect.
        auto o = plexus::ChannelOptions::create();
        o.shared(false)
            .max_receive_message_size(1 << 20)
            .max_send_message_size(1 << 20)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(1 << 22)
            .adaptive_window(false)
            .keepalive_time_ms(0)
            .keepalive_timeout_ms(20000)
            .keepalive_permit_without_calls(false)
            .max_frame_size(16384)
            .connect_timeout_ms(10000)
            .multiple_connections(true)
            .max_connections_per_endpoint(2)
            .backoff(500, 1.5, 0.1, 10000)
            .idle_timeout_ms(60000)
            .resolve_interval_ms(30000)
            .compression("identity")
            .lb_policy("pick_first")
            .user_agent("cpp-test");
        auto own = plexus::Channel::create(test_target(), &o);
        own.connect(LONG_MS);
        CHECK(own.state() == PLEXUS_STATE_READY);
        (void)own.unary(UNARY, request("o"));
        auto s = own.stats();
        CHECK(s.calls_started == 1 && s.connections == 1);
        passed++;
    }
    {  // TLS to grpcio with call credentials from a std::function.
        const char *target = getenv("PLEXUS_TEST_GRPCIO_TLS_TARGET");
        CHECK(target != nullptr);
        auto tokens = std::make_shared<int>(0);  // counts calls; shows when plexus lets go
        {
            auto o = plexus::ChannelOptions::create();
            o.shared(false).add_tls_ca_pem(cert("ca.pem")).tls_native_roots(false).tls_server_name(
                "localhost");
            o.call_credentials([tokens](std::string_view method, plexus::MetadataWriter &md) {
                CHECK(method == UNARY);
                ++*tokens;
                md.append("authorization", "Bearer cpp-" + std::to_string(*tokens));
                CHECK(md.read().get("authorization").has_value());
            });
            auto tls = plexus::Channel::create(target, &o);
            auto reply = tls.unary(UNARY, request("tls"), nullptr, LONG_MS);
            CHECK(text_of(reply.message) == "tls");
            CHECK(reply.status.initial_metadata().get("x-authorization") ==
                  std::string_view("Bearer cpp-1"));
            // Replacing the function keeps the first alive for the channel that uses it.
            o.call_credentials([](std::string_view, plexus::MetadataWriter &) {
                throw std::runtime_error("no token today");
            });
            CHECK(tokens.use_count() == 2);
            auto failing = plexus::Channel::create(target, &o);
            std::string why = rpc_error([&] { (void)failing.unary(UNARY, request("x")); }, 14);
            CHECK(why.find("no token today") != std::string::npos);
            o.call_credentials([](std::string_view, plexus::MetadataWriter &) { throw 42; });
            auto odd = plexus::Channel::create(target, &o);
            why = rpc_error([&] { (void)odd.unary(UNARY, request("x")); }, 14);
            CHECK(why.find("unknown exception") != std::string::npos);
            o.call_credentials(nullptr);
            (void)tls.unary(UNARY, request("again"), nullptr, LONG_MS);
            CHECK(*tokens == 2);
        }
        CHECK(sole_owner(tokens));
        // A CA that did not sign the server's certificate, and a name it is not for.
        auto o = plexus::ChannelOptions::create();
        o.shared(false).add_tls_ca_pem(cert("other-ca.pem")).tls_server_name("localhost");
        auto untrusted = plexus::Channel::create(target, &o);
        std::string why = rpc_error([&] { (void)untrusted.unary(UNARY, request("x")); }, 14);
        CHECK(why.find("not signed by a trusted CA (unknown issuer)") != std::string::npos);
        auto p = plexus::ChannelOptions::create();
        p.shared(false).add_tls_ca_pem(cert("ca.pem")).tls_server_name("wrong.example");
        auto misnamed = plexus::Channel::create(target, &p);
        why = rpc_error([&] { (void)misnamed.unary(UNARY, request("x")); }, 14);
        CHECK(why.find("name mismatch") != std::string::npos);
        CHECK(why.find("wrong.example") != std::string::npos);
        passed++;
    }
    {  // Mutual TLS to the plexus server with a client certificate.
        const char *target = getenv("PLEXUS_TEST_TLS_TARGET");
        CHECK(target != nullptr);
        auto o = plexus::ChannelOptions::create();
        o.shared(false)
            .tls(true)
            .add_tls_ca_pem(cert("ca.pem"))
            .tls_server_name("localhost")
            .tls_identity_pem(cert("client.pem"), cert("client.key"));
        auto mtls = plexus::Channel::create(target, &o);
        CHECK(text_of(mtls.unary(UNARY, request("m"), nullptr, LONG_MS).message) == "m");
        passed++;
    }
    plexus::shutdown();
    return finish_tests("test_cpp", passed);
}
