// The C++ server wrapper (bindings/cpp/plexus.hpp) with plexus's own C++ client: every handler
// kind, the catch-all, the context (metadata, peer, trailers, deadline), handlers that throw,
// clients that cancel, deadlines, oversize requests, the host's own event loop, a child call
// with its parent's deadline, and shutdown with calls in flight. Messages are raw bytes: both
// ends are ours, so no protobuf is needed. No check depends on how fast anything runs.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include "common.h"
#include "plexus.hpp"

static_assert(!std::is_copy_constructible_v<plexus::Server>);
static_assert(std::is_nothrow_move_constructible_v<plexus::Server>);
static_assert(!std::is_copy_constructible_v<plexus::ServerContext>);
static_assert(!std::is_copy_assignable_v<plexus::ServerTls>);

using plexus::Bytes;
using plexus::ServerContext;
using plexus::ServerStatus;

static std::string text(const Bytes &b) { return std::string(b.view()); }

/// A one-shot flag a test thread waits on (with LONG_MS as the bound of a broken test).
class Latch {
  public:
    void open() {
        std::lock_guard<std::mutex> lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }
    [[nodiscard]] bool wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, std::chrono::milliseconds(LONG_MS), [&] { return open_; });
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

/// Waits (up to LONG_MS) until the call `ctx` is over; whether it got there.
static bool wait_cancelled(const ServerContext &ctx) {
    for (int i = 0; i < LONG_MS; i++) {
        if (ctx.is_cancelled()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

/// The status `f` ends with: its RpcError's code, or 0 when it throws none.
template <typename F>
static std::int32_t rpc_code(F f, std::string *message = nullptr) {
    try {
        f();
    } catch (const plexus::RpcError &e) {
        if (message != nullptr) *message = std::string(e.status().message());
        return e.status().code();
    }
    return 0;
}

/// The result code of the plexus::Error `f` throws, PLEXUS_OK for none.
template <typename F>
static plexus_result error_code(F f) {
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

    // What the handlers report to the test.
    Latch cancel_seen, deadline_seen, shutdown_seen, release_graceful, graceful_entered;
    std::atomic<bool> cancel_read_ended{false};
    std::atomic<std::int64_t> deadline_remaining{-2};
    std::atomic<bool> oversize_threw{false};
    std::atomic<bool> shutdown_read_ended{false};
    Latch child_ended;
    std::atomic<std::int32_t> child_code{-1};
    std::atomic<bool> inline_wait_refused{false};

    auto options = plexus::ServerOptions::create();
    options.max_receive_message_size(1024).max_concurrent_streams(100);
    auto server = plexus::Server::create(&options);
    server
        .unary("/t.S/Unary",
               [](ServerContext &ctx, const Bytes &request, Bytes &response) {
                   auto initial = plexus::Metadata::create();
                   auto greeting = ctx.metadata().get("x-greeting");
                   initial.append("x-method", std::string(ctx.method()));
                   initial.append("x-peer", std::string(ctx.peer()));
                   initial.append("x-greeting", std::string(greeting.value_or("none")));
                   ctx.send_initial_metadata(initial);
                   ctx.trailers().append("x-trailer", "t");
                   response = Bytes::copy("echo:" + text(request));
                   auto more = plexus::Metadata::create();
                   more.append_bin("x-status-bin", std::string("\x01\x02", 2));
                   return ServerStatus(0, "", std::move(more));
               })
        .server_streaming("/t.S/ServerStream",
                          [](ServerContext &, const Bytes &request, plexus::ServerWriter &w) {
                              int n = std::atoi(text(request).c_str());
                              for (int i = 0; i < n; i++) {
                                  if (!w.write(Bytes::copy(std::to_string(i)))) break;
                              }
                              return ServerStatus();
                          })
        .client_streaming("/t.S/ClientStream",
                          [](ServerContext &, plexus::ServerReader &r, Bytes &response) {
                              std::string all;
                              Bytes m;
                              while (r.read(m)) all += text(m);
                              response = Bytes::copy(all);
                              return ServerStatus();
                          })
        .bidi_streaming("/t.S/Bidi",
                        [](ServerContext &, plexus::ServerReader &r, plexus::ServerWriter &w) {
                            Bytes m;
                            while (r.read(m)) {
                                if (!w.write(Bytes::copy("re:" + text(m)), PLEXUS_SEND_NO_COMPRESS)) {
                                    break;
                                }
                            }
                            return ServerStatus();
                        })
        .unary_inline("/t.S/Inline",
                      [&](ServerContext &ctx, const Bytes &request, Bytes &response) -> ServerStatus {
                          // On a plexus worker: the waits are refused, the answer is not.
                          inline_wait_refused = error_code([&] {
                              ctx.send_initial_metadata(plexus::Metadata::create(), LONG_MS);
                          }) == PLEXUS_ERR_WRONG_STATE;
                          if (text(request) == "throw") throw std::runtime_error("inline broke");
                          ctx.trailers().append("x-inline", "yes");
                          response = Bytes::copy("inline:" + text(request));
                          return ServerStatus();
                      })
        .unary("/t.S/Throw",
               [](ServerContext &, const Bytes &request, Bytes &) -> ServerStatus {
                   std::string kind = text(request);
                   if (kind == "server-error") throw plexus::ServerError(plexus::code::not_found, "no such thing");
                   if (kind == "int") throw 42;
                   if (kind == "bad-code") return ServerStatus(99, "ninety-nine");
                   throw std::runtime_error("the handler broke");
               })
        .unary("/t.S/Status",
               [](ServerContext &, const Bytes &, Bytes &) {
                   return ServerStatus(plexus::code::failed_precondition, "not now");
               })
        .bidi_streaming("/t.S/Cancel",
                        [&](ServerContext &ctx, plexus::ServerReader &r, plexus::ServerWriter &) {
                            Bytes m;
                            while (r.read(m)) {
                            }
                            cancel_read_ended = true;
                            if (wait_cancelled(ctx)) cancel_seen.open();
                            return ServerStatus();
                        })
        .unary("/t.S/Sleep",
               [&](ServerContext &ctx, const Bytes &, Bytes &response) {
                   deadline_remaining = ctx.remaining_ms();
                   if (wait_cancelled(ctx)) deadline_seen.open();
                   response = Bytes::copy("late");
                   return ServerStatus();
               })
        .client_streaming("/t.S/Oversize",
                          [&](ServerContext &, plexus::ServerReader &r, Bytes &response) {
                              Bytes m;
                              try {
                                  while (r.read(m)) {
                                  }
                              } catch (const plexus::Error &e) {
                                  oversize_threw = e.code() == PLEXUS_ERR_RPC;
                                  throw;
                              }
                              response = Bytes::copy("fit");
                              return ServerStatus();
                          })
        .unary("/t.S/Parent",
               [&](ServerContext &ctx, const Bytes &request, Bytes &response) {
                   // A child call on behalf of this one: the parent's deadline ends it.
                   auto channel = plexus::Channel::create(text(request));
                   auto o = plexus::CallOptions::create();
                   o.parent(ctx);
                   child_code = rpc_code([&] { (void)channel.unary("/t.S/Sleep", Bytes::copy(""), &o); });
                   child_ended.open();
                   response = Bytes::copy("");
                   return ServerStatus();
               })
        .unary("/t.S/Graceful",
               [&](ServerContext &, const Bytes &, Bytes &response) {
                   graceful_entered.open();
                   CHECK(release_graceful.wait());
                   response = Bytes::copy("finished");
                   return ServerStatus();
               })
        .bidi_streaming("/t.S/Stuck",
                        [&](ServerContext &ctx, plexus::ServerReader &r, plexus::ServerWriter &) {
                            shutdown_seen.open();
                            Bytes m;
                            try {
                                while (r.read(m)) {
                                }
                            } catch (const plexus::Error &e) {
                                CHECK(e.code() == PLEXUS_ERR_RPC);
                            }
                            shutdown_read_ended = wait_cancelled(ctx);
                            return ServerStatus();
                        })
        .catch_all([](ServerContext &ctx, plexus::ServerReader &r, plexus::ServerWriter &w) {
            Bytes m;
            while (r.read(m)) {
                (void)w.write(Bytes::copy(std::string(ctx.method()) + ":" + text(m)));
            }
            return ServerStatus();
        });
    int port = server.add_listener("127.0.0.1:0");
    CHECK(port > 0);
    std::string uds = "unix:/tmp/plexus-test-cpp-server-" + std::to_string(getpid()) + ".sock";
    CHECK(server.add_listener(uds) == 0);
    server.start(6);
    std::string target = "127.0.0.1:" + std::to_string(port);
    auto channel = plexus::Channel::create(target);

    {  // Unary: the context's method, peer and metadata, initial metadata and trailers.
        auto md = plexus::Metadata::create();
        md.append("x-greeting", "hi");
        auto o = plexus::CallOptions::create();
        o.metadata(md);
        auto reply = channel.unary("/t.S/Unary", Bytes::copy("a"), &o, LONG_MS);
        CHECK(text(reply.message) == "echo:a");
        auto initial = reply.status.initial_metadata();
        CHECK(initial.get("x-method") == "/t.S/Unary");
        CHECK(initial.get("x-peer").value_or("").rfind("ipv4:127.0.0.1:", 0) == 0);
        CHECK(initial.get("x-greeting") == "hi");
        auto trailers = reply.status.trailing_metadata();
        CHECK(trailers.get("x-trailer") == "t");
        CHECK(trailers.get("x-status-bin") == std::string("\x01\x02", 2));
        passed++;
    }
    {  // A unary handler run on the worker: its answer and trailers, a throw, the waits refused.
        auto reply = channel.unary("/t.S/Inline", Bytes::copy("x"), nullptr, LONG_MS);
        CHECK(text(reply.message) == "inline:x");
        CHECK(reply.status.trailing_metadata().get("x-inline") == "yes");
        CHECK(inline_wait_refused);
        std::string why;
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Inline", Bytes::copy("throw"), nullptr, LONG_MS); }, &why) == 2);
        CHECK(why == "Exception calling application: inline broke");
        passed++;
    }
    {  // Over the Unix socket too.
        auto unix_channel = plexus::Channel::create(uds);
        CHECK(text(unix_channel.unary("/t.S/Unary", Bytes::copy("u"), nullptr, LONG_MS).message) == "echo:u");
        passed++;
    }
    {  // Server streaming.
        auto call = channel.start_server_streaming("/t.S/ServerStream", Bytes::copy("3"), nullptr, LONG_MS);
        for (int i = 0; i < 3; i++) {
            auto m = call.recv(LONG_MS);
            CHECK(m && text(*m) == std::to_string(i));
        }
        CHECK(!call.recv(LONG_MS));
        CHECK(call.finish(LONG_MS).ok());
        passed++;
    }
    {  // Client streaming.
        auto call = channel.start("/t.S/ClientStream", nullptr, LONG_MS);
        for (const char *part : {"x", "y", "z"}) call.send(Bytes::copy(part), LONG_MS);
        call.close_send(LONG_MS);
        auto m = call.recv(LONG_MS);
        CHECK(m && text(*m) == "xyz");
        CHECK(call.finish(LONG_MS).ok());
        passed++;
    }
    {  // Bidirectional streaming, message by message.
        auto call = channel.start("/t.S/Bidi", nullptr, LONG_MS);
        for (const char *part : {"1", "2"}) {
            call.send(Bytes::copy(part), LONG_MS);
            auto m = call.recv(LONG_MS);
            CHECK(m && text(*m) == std::string("re:") + part);
        }
        call.close_send(LONG_MS);
        CHECK(!call.recv(LONG_MS));
        CHECK(call.finish(LONG_MS).ok());
        passed++;
    }
    {  // The catch-all gets every other path; its context names the method.
        auto call = channel.start("/other.Service/Anything", nullptr, LONG_MS);
        call.send(Bytes::copy("m"), LONG_MS);
        call.close_send(LONG_MS);
        auto m = call.recv(LONG_MS);
        CHECK(m && text(*m) == "/other.Service/Anything:m");
        CHECK(call.finish(LONG_MS).ok());
        passed++;
    }
    {  // Statuses a handler returns or throws; an exception never ends the process.
        std::string why;
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Status", Bytes::copy(""), nullptr, LONG_MS); }, &why) == 9);
        CHECK(why == "not now");
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Throw", Bytes::copy("std"), nullptr, LONG_MS); }, &why) == 2);
        CHECK(why.find("the handler broke") != std::string::npos);
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Throw", Bytes::copy("server-error"), nullptr, LONG_MS); }, &why) == 5);
        CHECK(why == "no such thing");
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Throw", Bytes::copy("int"), nullptr, LONG_MS); }, &why) == 2);
        CHECK(why.find("unknown exception") != std::string::npos);
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Throw", Bytes::copy("bad-code"), nullptr, LONG_MS); }, &why) == 2);
        CHECK(why.find("99") != std::string::npos);
        passed++;
    }
    {  // A client that cancels: the handler's read ends and its context says so.
        auto call = channel.start("/t.S/Cancel", nullptr, LONG_MS);
        call.send(Bytes::copy("m"), LONG_MS);
        call.cancel();
        CHECK(call.finish(LONG_MS).code() == plexus::code::cancelled);
        CHECK(cancel_seen.wait());
        CHECK(cancel_read_ended);
        passed++;
    }
    {  // A deadline: the handler sees the time left, then the call end; the client
       // DEADLINE_EXCEEDED, and the handler's late answer goes nowhere.
        auto o = plexus::CallOptions::create();
        o.timeout_ms(300);
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Sleep", Bytes::copy(""), &o); }) == 4);
        CHECK(deadline_seen.wait());
        CHECK(deadline_remaining >= 0 && deadline_remaining <= 300);
        passed++;
    }
    {  // A child call made with the handler's context as parent ends with the parent's deadline.
        auto o = plexus::CallOptions::create();
        o.timeout_ms(300);
        std::int32_t code = rpc_code([&] { (void)channel.unary("/t.S/Parent", Bytes::copy(target), &o); });
        CHECK(code == plexus::code::deadline_exceeded);
        // Without the parent the child would sleep until its handler's LONG_MS bound, then
        // answer OK.
        CHECK(child_ended.wait());
        CHECK(child_code == plexus::code::deadline_exceeded || child_code == plexus::code::cancelled);
        passed++;
    }
    {  // A request over max_receive_message_size: RESOURCE_EXHAUSTED, for a unary call before
       // any handler, for a stream when the handler reads it.
        std::string big(2048, 'b');
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Unary", Bytes::copy(big), nullptr, LONG_MS); }) == 8);
        auto call = channel.start("/t.S/Oversize", nullptr, LONG_MS);
        call.send(Bytes::copy("small"), LONG_MS);
        (void)error_code([&] { call.send(Bytes::copy(big), LONG_MS); });
        (void)error_code([&] { call.close_send(LONG_MS); });
        CHECK(call.finish(LONG_MS).code() == plexus::code::resource_exhausted);
        CHECK(oversize_threw);
        passed++;
    }
    {  // Wrong use is an Error, not a crash: a bad address, registering after start.
        CHECK(error_code([&] { (void)server.add_listener("not an address"); }) == PLEXUS_ERR_INVALID_ARGUMENT);
        CHECK(error_code([&] {
                  server.unary("/t.S/Late", [](ServerContext &, const Bytes &, Bytes &) { return ServerStatus(); });
              }) == PLEXUS_ERR_WRONG_STATE);
        auto bad_tls = plexus::ServerTls::create("not a pem", "not a key");
        CHECK(error_code([&] { (void)server.add_listener("127.0.0.1:0", &bad_tls); }) ==
              PLEXUS_ERR_INVALID_ARGUMENT);
        auto twice = plexus::Server::create();
        twice.unary("/t.S/A", [](ServerContext &, const Bytes &, Bytes &) { return ServerStatus(); });
        twice.unary("/t.S/A", [](ServerContext &, const Bytes &, Bytes &) { return ServerStatus(); });
        CHECK(error_code([&] { twice.start(1); }) == PLEXUS_ERR_INVALID_ARGUMENT);
        passed++;
    }
    {  // The host's own loop: start_on a queue it drains, handle_event on its thread.
        auto cq = plexus::CompletionQueue::create();
        auto hosted = plexus::Server::create();
        hosted.unary("/t.S/Hosted", [](ServerContext &, const Bytes &request, Bytes &response) {
            response = Bytes::copy("hosted:" + text(request));
            return ServerStatus();
        });
        int hosted_port = hosted.add_listener("127.0.0.1:0");
        hosted.start_on(cq);
        std::thread loop([&] {
            for (;;) {
                std::optional<plexus::Event> ev;
                try {
                    ev = cq.next(LONG_MS);
                } catch (const plexus::Error &) {
                    return;  // the queue shut down
                }
                if (ev) CHECK(hosted.handle_event(*ev));
            }
        });
        auto c = plexus::Channel::create("127.0.0.1:" + std::to_string(hosted_port));
        CHECK(text(c.unary("/t.S/Hosted", Bytes::copy("q"), nullptr, LONG_MS).message) == "hosted:q");
        hosted.shutdown(0);
        cq.shutdown();
        loop.join();
        passed++;
    }
    {  // Shutdown with calls in flight: one the grace lets finish, one stuck until cancelled.
        std::string grace_answer;
        std::thread graceful([&] {
            grace_answer = text(channel.unary("/t.S/Graceful", Bytes::copy(""), nullptr, LONG_MS).message);
        });
        auto stuck = channel.start("/t.S/Stuck", nullptr, LONG_MS);
        CHECK(graceful_entered.wait());
        CHECK(shutdown_seen.wait());
        std::thread stopper([&] { server.shutdown(-1); });
        release_graceful.open();
        graceful.join();
        CHECK(grace_answer == "finished");
        // The stuck stream holds the shutdown until the client gives up on it.
        stuck.cancel();
        stopper.join();
        CHECK(shutdown_read_ended);
        server.wait();
        // Shut down for good: no more calls get through.
        CHECK(rpc_code([&] { (void)channel.unary("/t.S/Unary", Bytes::copy("a"), nullptr, LONG_MS); }) != 0);
        passed++;
    }
    {  // Destroying a running server cancels its calls in flight.
        Latch entered;
        std::atomic<bool> ended{false};
        auto doomed = std::make_unique<plexus::Server>(plexus::Server::create());
        doomed->bidi_streaming("/t.S/Forever", [&](ServerContext &, plexus::ServerReader &r, plexus::ServerWriter &) {
            entered.open();
            Bytes m;
            try {
                while (r.read(m)) {
                }
            } catch (const plexus::Error &e) {
                // The cancelled stream may end as a failure (the connection went away).
                ended = e.code() == PLEXUS_ERR_RPC;
                throw;
            }
            ended = true;
            return ServerStatus();
        });
        int doomed_port = doomed->add_listener("127.0.0.1:0");
        doomed->start(2);
        auto c = plexus::Channel::create("127.0.0.1:" + std::to_string(doomed_port));
        auto call = c.start("/t.S/Forever", nullptr, LONG_MS);
        CHECK(entered.wait());
        doomed.reset();
        CHECK(ended);
        CHECK(!call.finish(LONG_MS).ok());
        passed++;
    }
    unlink(uds.c_str() + std::strlen("unix:"));
    plexus::shutdown();
    return finish_tests("test_cpp_server", passed);
}
