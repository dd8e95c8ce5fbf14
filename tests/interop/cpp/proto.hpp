// proto.hpp: the protobuf wire format for the grpc.testing messages the C++ interop server
// uses (interop/proto/messages.proto), written by hand so that the server needs no protobuf
// library. Decoding skips unknown fields as protobuf does and rejects malformed input
// (truncated varints or lengths, wire types 3 and 4, field number 0) by returning false.
#ifndef PLEXUS_INTEROP_PROTO_HPP
#define PLEXUS_INTEROP_PROTO_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace proto {

/// Protobuf wire types.
enum WireType : std::uint32_t { VARINT = 0, FIXED64 = 1, LEN = 2, FIXED32 = 5 };

/// Reads fields from one encoded message.
class Reader {
  public:
    /// Reads `data`, which must outlive the reader.
    explicit Reader(std::string_view data) noexcept : p_(data.data()), end_(data.data() + data.size()) {}

    /// Whether every byte was read.
    [[nodiscard]] bool done() const noexcept { return p_ == end_; }

    /// The next field's number and wire type; false when malformed.
    [[nodiscard]] bool key(std::uint32_t &field, WireType &type) noexcept {
        std::uint64_t k = 0;
        if (!varint(k)) return false;
        std::uint64_t number = k >> 3;
        auto t = static_cast<std::uint32_t>(k & 7);
        if (number == 0 || number > 0x1fffffff) return false;
        if (t != VARINT && t != FIXED64 && t != LEN && t != FIXED32) return false;
        field = static_cast<std::uint32_t>(number);
        type = static_cast<WireType>(t);
        return true;
    }
    /// A base-128 varint of at most 10 bytes.
    [[nodiscard]] bool varint(std::uint64_t &out) noexcept {
        out = 0;
        for (int shift = 0; shift < 70; shift += 7) {
            if (p_ == end_) return false;
            auto byte = static_cast<std::uint8_t>(*p_++);
            if (shift == 63 && byte > 1) return false;
            out |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
            if ((byte & 0x80) == 0) return true;
        }
        return false;
    }
    /// A length-delimited value, borrowed from the input.
    [[nodiscard]] bool bytes(std::string_view &out) noexcept {
        std::uint64_t len = 0;
        if (!varint(len)) return false;
        if (len > static_cast<std::uint64_t>(end_ - p_)) return false;
        out = std::string_view(p_, static_cast<std::size_t>(len));
        p_ += len;
        return true;
    }
    /// An int32 or enum field (a varint truncated to 32 bits, as protobuf does).
    [[nodiscard]] bool int32(std::int32_t &out) noexcept {
        std::uint64_t v = 0;
        if (!varint(v)) return false;
        out = static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
        return true;
    }
    /// A bool field.
    [[nodiscard]] bool boolean(bool &out) noexcept {
        std::uint64_t v = 0;
        if (!varint(v)) return false;
        out = v != 0;
        return true;
    }
    /// Skips a field's value of wire type `type`.
    [[nodiscard]] bool skip(WireType type) noexcept {
        std::uint64_t v = 0;
        std::string_view s;
        switch (type) {
            case VARINT: return varint(v);
            case LEN: return bytes(s);
            case FIXED64: return advance(8);
            case FIXED32: return advance(4);
        }
        return false;
    }

  private:
    bool advance(std::size_t n) noexcept {
        if (n > static_cast<std::size_t>(end_ - p_)) return false;
        p_ += n;
        return true;
    }
    const char *p_;
    const char *end_;
};

/// Appends fields to an encoded message.
class Writer {
  public:
    /// A varint.
    void varint(std::uint64_t v) {
        while (v >= 0x80) {
            out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
            v >>= 7;
        }
        out_.push_back(static_cast<char>(v));
    }
    /// An int32 or enum field; omitted when 0 (proto3). Negative values take 10 bytes.
    void int32(std::uint32_t field, std::int32_t v) {
        if (v == 0) return;
        key(field, VARINT);
        varint(static_cast<std::uint64_t>(static_cast<std::int64_t>(v)));
    }
    /// A bool field; omitted when false.
    void boolean(std::uint32_t field, bool v) {
        if (!v) return;
        key(field, VARINT);
        varint(1);
    }
    /// A string or bytes field; omitted when empty (proto3).
    void bytes(std::uint32_t field, std::string_view v) {
        if (v.empty()) return;
        key(field, LEN);
        varint(v.size());
        out_.append(v);
    }
    /// A message field, present even when empty.
    void message(std::uint32_t field, std::string_view encoded) {
        key(field, LEN);
        varint(encoded.size());
        out_.append(encoded);
    }
    /// The encoding so far.
    [[nodiscard]] const std::string &str() const noexcept { return out_; }
    /// Takes the encoding.
    [[nodiscard]] std::string take() noexcept { return std::move(out_); }

  private:
    void key(std::uint32_t field, WireType type) { varint((std::uint64_t{field} << 3) | type); }
    std::string out_;
};

// ---- grpc.testing messages ------------------------------------------------------------------

/// grpc.testing.Payload { PayloadType type = 1; bytes body = 2; }
struct Payload {
    std::int32_t type = 0;
    std::string body;
};

/// grpc.testing.EchoStatus { int32 code = 1; string message = 2; }
struct EchoStatus {
    std::int32_t code = 0;
    std::string message;
};

/// grpc.testing.ResponseParameters { int32 size = 1; int32 interval_us = 2;
/// BoolValue compressed = 3; }
struct ResponseParameters {
    std::int32_t size = 0;
    std::int32_t interval_us = 0;
    std::optional<bool> compressed;
};

/// grpc.testing.SimpleRequest, the fields the interop cases use.
struct SimpleRequest {
    std::int32_t response_type = 0;                 // 1
    std::int32_t response_size = 0;                 // 2
    std::optional<Payload> payload;                 // 3
    std::optional<bool> response_compressed;        // 6 (BoolValue)
    std::optional<EchoStatus> response_status;      // 7
    std::optional<bool> expect_compressed;          // 8 (BoolValue)
    bool fill_server_id = false;                    // 9
};

/// grpc.testing.SimpleResponse, the fields this server fills.
struct SimpleResponse {
    std::optional<Payload> payload;  // 1
    std::string server_id;           // 4
};

/// grpc.testing.StreamingInputCallRequest { Payload payload = 1; BoolValue expect_compressed = 2; }
struct StreamingInputCallRequest {
    std::optional<Payload> payload;
    std::optional<bool> expect_compressed;
};

/// grpc.testing.StreamingOutputCallRequest, the fields the interop cases use.
struct StreamingOutputCallRequest {
    std::int32_t response_type = 0;                       // 1
    std::vector<ResponseParameters> response_parameters;  // 2
    std::optional<Payload> payload;                       // 3
    std::optional<EchoStatus> response_status;            // 7
};

namespace detail {
/// Reads every field of `data` with `on_field(reader, field, type)`, which returns false for
/// a malformed value; fields it does not consume must be skipped by it.
template <typename F>
bool fields(std::string_view data, F on_field) {
    Reader r(data);
    while (!r.done()) {
        std::uint32_t field = 0;
        WireType type{};
        if (!r.key(field, type) || !on_field(r, field, type)) return false;
    }
    return true;
}

/// A nested message field's bytes; false when the wire type is not LEN.
inline bool nested(Reader &r, WireType type, std::string_view &out) {
    return type == LEN && r.bytes(out);
}
}  // namespace detail

/// Decodes google.protobuf.BoolValue / grpc.testing.BoolValue { bool value = 1; }.
inline bool decode(std::string_view data, bool &out) {
    out = false;
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        if (f == 1 && t == VARINT) return r.boolean(out);
        return r.skip(t);
    });
}

/// Decodes a Payload.
inline bool decode(std::string_view data, Payload &out) {
    out = Payload{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        std::string_view s;
        if (f == 1 && t == VARINT) return r.int32(out.type);
        if (f == 2 && t == LEN) {
            if (!r.bytes(s)) return false;
            out.body.assign(s);
            return true;
        }
        return r.skip(t);
    });
}

/// Decodes an EchoStatus.
inline bool decode(std::string_view data, EchoStatus &out) {
    out = EchoStatus{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        std::string_view s;
        if (f == 1 && t == VARINT) return r.int32(out.code);
        if (f == 2 && t == LEN) {
            if (!r.bytes(s)) return false;
            out.message.assign(s);
            return true;
        }
        return r.skip(t);
    });
}

/// Decodes a ResponseParameters.
inline bool decode(std::string_view data, ResponseParameters &out) {
    out = ResponseParameters{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        std::string_view s;
        bool b = false;
        if (f == 1 && t == VARINT) return r.int32(out.size);
        if (f == 2 && t == VARINT) return r.int32(out.interval_us);
        if (f == 3) {
            if (!detail::nested(r, t, s) || !decode(s, b)) return false;
            out.compressed = b;
            return true;
        }
        return r.skip(t);
    });
}

/// Decodes the optional message field `out` of type T from a field of wire type `t`.
template <typename T>
inline bool decode_field(Reader &r, WireType t, std::optional<T> &out) {
    std::string_view s;
    T value{};
    if (!detail::nested(r, t, s) || !decode(s, value)) return false;
    out = std::move(value);
    return true;
}

/// Decodes a SimpleRequest.
inline bool decode(std::string_view data, SimpleRequest &out) {
    out = SimpleRequest{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        switch (f) {
            case 1: return t == VARINT && r.int32(out.response_type);
            case 2: return t == VARINT && r.int32(out.response_size);
            case 3: return decode_field(r, t, out.payload);
            case 6: return decode_field(r, t, out.response_compressed);
            case 7: return decode_field(r, t, out.response_status);
            case 8: return decode_field(r, t, out.expect_compressed);
            case 9: return t == VARINT && r.boolean(out.fill_server_id);
            default: return r.skip(t);
        }
    });
}

/// Decodes a StreamingInputCallRequest.
inline bool decode(std::string_view data, StreamingInputCallRequest &out) {
    out = StreamingInputCallRequest{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        switch (f) {
            case 1: return decode_field(r, t, out.payload);
            case 2: return decode_field(r, t, out.expect_compressed);
            default: return r.skip(t);
        }
    });
}

/// Decodes a StreamingOutputCallRequest.
inline bool decode(std::string_view data, StreamingOutputCallRequest &out) {
    out = StreamingOutputCallRequest{};
    return detail::fields(data, [&](Reader &r, std::uint32_t f, WireType t) {
        std::optional<ResponseParameters> params;
        switch (f) {
            case 1: return t == VARINT && r.int32(out.response_type);
            case 2:
                if (!decode_field(r, t, params)) return false;
                out.response_parameters.push_back(*params);
                return true;
            case 3: return decode_field(r, t, out.payload);
            case 7: return decode_field(r, t, out.response_status);
            default: return r.skip(t);
        }
    });
}

/// Encodes a Payload.
inline std::string encode(const Payload &p) {
    Writer w;
    w.int32(1, p.type);
    w.bytes(2, p.body);
    return w.take();
}

/// Encodes a SimpleResponse.
inline std::string encode(const SimpleResponse &m) {
    Writer w;
    if (m.payload) w.message(1, encode(*m.payload));
    w.bytes(4, m.server_id);
    return w.take();
}

/// Encodes a StreamingOutputCallResponse { Payload payload = 1; } with `payload`.
inline std::string encode_output_response(const Payload &payload) {
    Writer w;
    w.message(1, encode(payload));
    return w.take();
}

/// Encodes a StreamingInputCallResponse { int32 aggregated_payload_size = 1; }.
inline std::string encode_input_response(std::int32_t aggregated_payload_size) {
    Writer w;
    w.int32(1, aggregated_payload_size);
    return w.take();
}

/// A COMPRESSABLE payload of `size` zero bytes.
inline Payload zeros(std::int32_t size) {
    Payload p;
    p.body.assign(static_cast<std::size_t>(size < 0 ? 0 : size), '\0');
    return p;
}

}  // namespace proto

#endif  // PLEXUS_INTEROP_PROTO_HPP
