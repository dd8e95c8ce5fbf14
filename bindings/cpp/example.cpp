// A C++ client over plexus.hpp: one unary call and one bidirectional stream against the echo
// service of tests/peer (plexus.peer.Echo), messages encoded by hand.
//
//   c++ -std=c++17 -Iinclude -Ibindings/cpp bindings/cpp/example.cpp -Ltarget/debug -lplexus
//   ./a.out 127.0.0.1:50051
#include <cstdio>
#include <string>

#include "plexus.hpp"

// plexus.peer.EchoRequest { string message = 1; } for a short message.
static std::string echo_request(const std::string &text) {
    return std::string("\x0a", 1) + static_cast<char>(text.size()) + text;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
        return 2;
    }
    try {
        auto channel = plexus::Channel::create(argv[1]);

        auto md = plexus::Metadata::create();
        md.append("x-echo-greeting", "hello");
        auto options = plexus::CallOptions::create();
        options.timeout_ms(5000).metadata(md);
        auto reply = channel.unary("/plexus.peer.Echo/Unary",
                                   plexus::Bytes::copy(echo_request("ping")), &options);
        auto greeting = reply.status.initial_metadata().get("x-echo-greeting");
        std::printf("unary: %zu bytes back, status %d, greeting %.*s\n",
                    reply.message.view().size(), reply.status.code(),
                    greeting ? static_cast<int>(greeting->size()) : 0,
                    greeting ? greeting->data() : "");

        auto call = channel.start("/plexus.peer.Echo/Bidi");
        for (const char *word : {"one", "two", "three"}) {
            call.send(plexus::Bytes::copy(echo_request(word)));
            auto msg = call.recv(5000);
            std::printf("bidi: %zu bytes back\n", msg ? msg->view().size() : 0);
        }
        call.close_send();
        while (auto msg = call.recv()) {
        }
        auto status = call.finish();
        std::printf("bidi: status %d\n", status.code());

        auto stats = channel.stats();
        std::printf("channel: %llu calls over %llu connection(s)\n",
                    static_cast<unsigned long long>(stats.calls_started),
                    static_cast<unsigned long long>(stats.connections));
    } catch (const plexus::RpcError &e) {
        std::fprintf(stderr, "call failed: %s (code %d)\n", e.what(), e.status().code());
        return 1;
    } catch (const plexus::Error &e) {
        std::fprintf(stderr, "plexus error: %s\n", e.what());
        return 1;
    }
    plexus::shutdown();
    return 0;
}
