// Checks proto.hpp against encodings made by the protobuf library (Python, from
// interop/proto/messages.proto), and its refusal of malformed input. Run by build.sh.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto.hpp"

static int failures = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static std::string unhex(const char *hex) {
    std::string out;
    for (const char *p = hex; p[0] != '\0' && p[1] != '\0'; p += 2) {
        out.push_back(static_cast<char>(std::strtol(std::string(p, 2).c_str(), nullptr, 16)));
    }
    return out;
}

int main() {
    {  // Every SimpleRequest field the server reads, an unknown field (fill_username) skipped.
        proto::SimpleRequest r;
        CHECK(proto::decode(unhex("10af96131a0512030000002001320208013a1308ffffffffffffffffff01"
                                  "1206686920e298ba42004801"),
                            r));
        CHECK(r.response_type == 0);
        CHECK(r.response_size == 314159);
        CHECK(r.payload && r.payload->body == std::string(3, '\0'));
        CHECK(r.response_compressed == true);
        CHECK(r.response_status && r.response_status->code == -1);
        CHECK(r.response_status && r.response_status->message == "hi \xe2\x98\xba");
        CHECK(r.expect_compressed == false);
        CHECK(r.fill_server_id);
    }
    {  // Repeated ResponseParameters, a BoolValue, a status.
        proto::StreamingOutputCallRequest r;
        CHECK(proto::decode(unhex("120a08b7f501100a1a020801120208091a04120261623a050802120178"), r));
        CHECK(r.response_parameters.size() == 2);
        CHECK(r.response_parameters[0].size == 31415);
        CHECK(r.response_parameters[0].interval_us == 10);
        CHECK(r.response_parameters[0].compressed == true);
        CHECK(r.response_parameters[1].size == 9);
        CHECK(!r.response_parameters[1].compressed);
        CHECK(r.payload && r.payload->body == "ab");
        CHECK(r.response_status && r.response_status->code == 2 && r.response_status->message == "x");
    }
    {
        proto::StreamingInputCallRequest r;
        CHECK(proto::decode(unhex("0a071205000000000012020801"), r));
        CHECK(r.payload && r.payload->body.size() == 5);
        CHECK(r.expect_compressed == true);
    }
    {  // The empty message decodes to the defaults.
        proto::SimpleRequest r;
        CHECK(proto::decode("", r));
        CHECK(r.response_size == 0 && !r.payload && !r.response_status);
    }
    {  // Encodings byte for byte as protobuf writes them.
        proto::SimpleResponse s;
        s.payload = proto::zeros(4);
        s.server_id = "plexus-cpp";
        CHECK(proto::encode(s) == unhex("0a06120400000000220a706c657875732d637070"));
        proto::SimpleResponse empty;
        empty.payload = proto::zeros(0);
        CHECK(proto::encode(empty) == unhex("0a00"));
        CHECK(proto::encode_output_response(proto::zeros(2)) == unhex("0a0412020000"));
        CHECK(proto::encode_input_response(74922) == unhex("08aac904"));
        CHECK(proto::encode_input_response(0).empty());
    }
    {  // Round trip of a negative int32 (ten bytes on the wire).
        proto::Writer w;
        w.int32(2, -5);
        proto::SimpleRequest r;
        CHECK(w.str().size() == 11);
        CHECK(proto::decode(w.str(), r) && r.response_size == -5);
    }
    {  // Malformed input is refused, never read past its end.
        proto::SimpleRequest r;
        CHECK(!proto::decode(unhex("10"), r));                      // truncated varint
        CHECK(!proto::decode(unhex("1a05120300"), r));              // length past the end
        CHECK(!proto::decode(unhex("0b"), r));                      // wire type 3 (group)
        CHECK(!proto::decode(unhex("0001"), r));                    // field number 0
        CHECK(!proto::decode(unhex("10ffffffffffffffffffff01"), r));  // varint over 10 bytes
        CHECK(!proto::decode(unhex("1a0208"), r));                  // nested truncated varint
        CHECK(!proto::decode(unhex("120100"), r));                  // field 2 (int32) as bytes
        CHECK(!proto::decode(unhex("3a01"), r));                    // nested length missing
        CHECK(proto::decode(unhex("f80100"), r));                   // unknown field 31 skipped
        CHECK(proto::decode(unhex("f9010102030405060708"), r));     // unknown fixed64 skipped
        CHECK(!proto::decode(unhex("f901010203"), r));              // truncated fixed64
    }
    if (failures != 0) {
        std::fprintf(stderr, "proto_test: %d checks failed\n", failures);
        return 1;
    }
    std::printf("proto_test: ok\n");
    return 0;
}
