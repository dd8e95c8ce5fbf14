// plexus.hpp: a header-only C++17 wrapper over the plexus C ABI (include/plexus.h).
//
// Every handle is a move-only RAII object that frees its C handle once; results that must
// not be ignored are [[nodiscard]]; failures throw plexus::Error (plexus::RpcError, with the
// call's Status, when a call ended with a gRPC status other than OK). Thread-safety is the C
// ABI's: Channel, Call and CompletionQueue may be used from several threads as plexus.h
// says; options and metadata objects are not for concurrent modification.
#ifndef PLEXUS_HPP
#define PLEXUS_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "plexus.h"

namespace plexus {

/// A failed plexus function: its result code and plexus_last_error()'s text.
class Error : public std::runtime_error {
  public:
    Error(plexus_result code, const std::string &what) : std::runtime_error(what), code_(code) {}
    /// The PLEXUS_* result code.
    [[nodiscard]] plexus_result code() const noexcept { return code_; }

  private:
    plexus_result code_;
};

namespace detail {
/// Throws plexus::Error unless `rc` is PLEXUS_OK.
inline void check(plexus_result rc) {
    if (rc != PLEXUS_OK) throw Error(rc, plexus_last_error());
}

/// Owns a C handle and frees it with `Free` once: the base of every RAII type here.
template <typename T, void (*Free)(T *)>
class Handle {
  public:
    Handle() noexcept = default;
    explicit Handle(T *raw) noexcept : raw_(raw) {}
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    Handle(Handle &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Handle &operator=(Handle &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    ~Handle() { reset(); }
    /// The C handle, still owned by this object.
    [[nodiscard]] T *get() const noexcept { return raw_; }
    /// Gives up ownership of the C handle.
    [[nodiscard]] T *release() noexcept { return std::exchange(raw_, nullptr); }
    explicit operator bool() const noexcept { return raw_ != nullptr; }

  protected:
    void reset() noexcept {
        if (raw_ != nullptr) Free(raw_);
        raw_ = nullptr;
    }

  private:
    T *raw_ = nullptr;
};

inline void free_channel(const plexus_channel *c) { plexus_channel_free(c); }
inline void free_call(const plexus_call *c) { plexus_call_free(c); }
inline void free_cq(const plexus_cq *c) { plexus_cq_free(c); }
}  // namespace detail

/// Starts the runtime with `threads` workers (0: PLEXUS_THREADS or one per core).
inline void init(std::uint32_t threads = 0) { detail::check(plexus_init(threads)); }

/// Stops the runtime for good (see plexus_shutdown).
inline void shutdown() { detail::check(plexus_shutdown()); }

/// An immutable byte buffer: a message to send or one received (read in place).
class Bytes : public detail::Handle<plexus_bytes, plexus_bytes_free> {
  public:
    using Handle::Handle;
    /// A copy of `size` bytes at `data`.
    [[nodiscard]] static Bytes copy(const void *data, std::size_t size) {
        plexus_bytes *out = nullptr;
        detail::check(plexus_bytes_copy(static_cast<const std::uint8_t *>(data), size, &out));
        return Bytes(out);
    }
    /// A copy of `text`.
    [[nodiscard]] static Bytes copy(std::string_view text) { return copy(text.data(), text.size()); }
    /// Caller memory sent without a copy; `release(context)` runs exactly once when plexus
    /// is done with it (also if this throws).
    [[nodiscard]] static Bytes wrap(const void *data, std::size_t size, plexus_release_fn release,
                                    void *context) {
        plexus_bytes *out = nullptr;
        detail::check(plexus_bytes_wrap(static_cast<const std::uint8_t *>(data), size, release,
                                        context, &out));
        return Bytes(out);
    }
    /// The bytes, in place; valid while this object lives.
    [[nodiscard]] std::string_view view() const {
        const std::uint8_t *data = nullptr;
        std::size_t size = 0;
        detail::check(plexus_bytes_data(get(), &data, &size));
        return {reinterpret_cast<const char *>(data), size};
    }
};

/// One metadata entry, borrowed from its metadata.
struct MetadataEntry {
    std::string_view key;
    std::string_view value;
    bool binary;
};

/// Read access to metadata, owned or borrowed.
class MetadataReader {
  public:
    explicit MetadataReader(const plexus_metadata *raw) noexcept : raw_(raw) {}
    /// Number of entries.
    [[nodiscard]] std::size_t size() const {
        std::size_t n = 0;
        detail::check(plexus_metadata_len(raw_, &n));
        return n;
    }
    /// Entry `index`, in order.
    [[nodiscard]] MetadataEntry entry(std::size_t index) const {
        plexus_metadata_entry e{};
        detail::check(plexus_metadata_get_entry(raw_, index, &e));
        return {{e.key, e.key_len},
                {reinterpret_cast<const char *>(e.value), e.value_len},
                e.binary};
    }
    /// The first value of `key`, if any.
    [[nodiscard]] std::optional<std::string_view> get(const std::string &key) const {
        const std::uint8_t *value = nullptr;
        std::size_t size = 0;
        detail::check(plexus_metadata_get(raw_, key.c_str(), &value, &size));
        if (value == nullptr) return std::nullopt;
        return std::string_view(reinterpret_cast<const char *>(value), size);
    }

  private:
    const plexus_metadata *raw_;
};

/// Owned metadata: to send, or received.
class Metadata : public detail::Handle<plexus_metadata, plexus_metadata_free> {
  public:
    using Handle::Handle;
    /// Empty metadata.
    [[nodiscard]] static Metadata create() {
        plexus_metadata *out = nullptr;
        detail::check(plexus_metadata_new(&out));
        return Metadata(out);
    }
    /// Appends an ASCII entry.
    Metadata &append(const std::string &key, const std::string &value) {
        detail::check(plexus_metadata_append(get(), key.c_str(), value.c_str()));
        return *this;
    }
    /// Appends a binary entry (key ends in -bin).
    Metadata &append_bin(const std::string &key, std::string_view value) {
        detail::check(plexus_metadata_append_bin(
            get(), key.c_str(), reinterpret_cast<const std::uint8_t *>(value.data()), value.size()));
        return *this;
    }
    /// Reads the entries.
    [[nodiscard]] MetadataReader read() const noexcept { return MetadataReader(get()); }
};

/// Borrowed metadata that may be added to: the request metadata a CallCredentials function
/// is given. Valid only during that function.
class MetadataWriter {
  public:
    explicit MetadataWriter(plexus_metadata *raw) noexcept : raw_(raw) {}
    /// Appends an ASCII entry.
    MetadataWriter &append(const std::string &key, const std::string &value) {
        detail::check(plexus_metadata_append(raw_, key.c_str(), value.c_str()));
        return *this;
    }
    /// Appends a binary entry (key ends in -bin).
    MetadataWriter &append_bin(const std::string &key, std::string_view value) {
        detail::check(plexus_metadata_append_bin(
            raw_, key.c_str(), reinterpret_cast<const std::uint8_t *>(value.data()), value.size()));
        return *this;
    }
    /// Reads the entries so far.
    [[nodiscard]] MetadataReader read() const noexcept { return MetadataReader(raw_); }

  private:
    plexus_metadata *raw_;
};

/// Adds one call's credentials (e.g. `md.append("authorization", "Bearer " + token)`), given
/// the full method path. Runs on a plexus thread, possibly on several at once, and may block.
/// Throwing fails the call with UNAVAILABLE and the exception's what() in its message; the
/// exception never reaches C.
using CallCredentials = std::function<void(std::string_view method, MetadataWriter &md)>;

namespace detail {
/// Copies `why` into the C callback's error buffer (NUL-terminated, cut to fit).
inline void write_error(char *error, std::size_t error_size, const char *why) noexcept {
    if (error_size == 0) return;
    std::strncpy(error, why, error_size - 1);
    error[error_size - 1] = '\0';
}
/// Runs a CallCredentials for the C callback; catches every exception.
inline std::int32_t run_credentials(void *user_data, const char *method, plexus_metadata *md,
                                    char *error, std::size_t error_size) noexcept {
    try {
        MetadataWriter writer(md);
        (*static_cast<CallCredentials *>(user_data))(method, writer);
        return 0;
    } catch (const std::exception &e) {
        write_error(error, error_size, e.what());
    } catch (...) {
        write_error(error, error_size, "unknown exception");
    }
    return 1;
}
/// Frees a CallCredentials once plexus no longer needs it.
inline void free_credentials(void *user_data) noexcept {
    delete static_cast<CallCredentials *>(user_data);
}
}  // namespace detail

/// How a call ended: code, message, details and the response metadata.
class Status : public detail::Handle<plexus_status, plexus_status_free> {
  public:
    using Handle::Handle;
    /// The gRPC status code (0 is OK).
    [[nodiscard]] std::int32_t code() const {
        std::int32_t code = 0;
        detail::check(plexus_status_code(get(), &code));
        return code;
    }
    /// Whether the code is OK.
    [[nodiscard]] bool ok() const { return code() == 0; }
    /// The status message.
    [[nodiscard]] std::string_view message() const {
        const char *text = nullptr;
        std::size_t size = 0;
        detail::check(plexus_status_message(get(), &text, &size));
        return {text, size};
    }
    /// The binary details (grpc-status-details-bin).
    [[nodiscard]] std::string_view details() const {
        const std::uint8_t *data = nullptr;
        std::size_t size = 0;
        detail::check(plexus_status_details(get(), &data, &size));
        return {reinterpret_cast<const char *>(data), size};
    }
    /// The response headers' metadata.
    [[nodiscard]] MetadataReader initial_metadata() const {
        const plexus_metadata *md = nullptr;
        detail::check(plexus_status_initial_metadata(get(), &md));
        return MetadataReader(md);
    }
    /// The trailers' metadata.
    [[nodiscard]] MetadataReader trailing_metadata() const {
        const plexus_metadata *md = nullptr;
        detail::check(plexus_status_trailing_metadata(get(), &md));
        return MetadataReader(md);
    }
};

/// A call that ended with a gRPC status other than OK.
class RpcError : public Error {
  public:
    RpcError(Status status, const std::string &what)
        : Error(PLEXUS_ERR_RPC, what), status_(std::move(status)) {}
    /// The call's status (code, message, details, metadata).
    [[nodiscard]] const Status &status() const noexcept { return status_; }

  private:
    Status status_;
};

namespace detail {
/// Throws RpcError (with `status`) for PLEXUS_ERR_RPC, Error for other failures.
inline void check_call(plexus_result rc, plexus_status *status) {
    if (rc == PLEXUS_ERR_RPC && status != nullptr) throw RpcError(Status(status), plexus_last_error());
    if (status != nullptr) plexus_status_free(status);
    check(rc);
}
}  // namespace detail

/// Channel settings (see the plexus_channel_options_set_* functions).
class ChannelOptions : public detail::Handle<plexus_channel_options, plexus_channel_options_free> {
  public:
    using Handle::Handle;
    /// Every setting at its default.
    [[nodiscard]] static ChannelOptions create() {
        plexus_channel_options *out = nullptr;
        detail::check(plexus_channel_options_new(&out));
        return ChannelOptions(out);
    }
    /// Whether the channel may share connections with equal channels (default true).
    ChannelOptions &shared(bool v) { return set(plexus_channel_options_set_shared(get(), v)); }
    ChannelOptions &max_receive_message_size(std::size_t v) {
        return set(plexus_channel_options_set_max_receive_message_size(get(), v));
    }
    ChannelOptions &max_send_message_size(std::size_t v) {
        return set(plexus_channel_options_set_max_send_message_size(get(), v));
    }
    ChannelOptions &initial_stream_window_size(std::uint32_t v) {
        return set(plexus_channel_options_set_initial_stream_window_size(get(), v));
    }
    ChannelOptions &initial_connection_window_size(std::uint32_t v) {
        return set(plexus_channel_options_set_initial_connection_window_size(get(), v));
    }
    ChannelOptions &adaptive_window(bool v) {
        return set(plexus_channel_options_set_adaptive_window(get(), v));
    }
    ChannelOptions &keepalive_time_ms(std::uint64_t v) {
        return set(plexus_channel_options_set_keepalive_time_ms(get(), v));
    }
    ChannelOptions &keepalive_timeout_ms(std::uint64_t v) {
        return set(plexus_channel_options_set_keepalive_timeout_ms(get(), v));
    }
    ChannelOptions &keepalive_permit_without_calls(bool v) {
        return set(plexus_channel_options_set_keepalive_permit_without_calls(get(), v));
    }
    ChannelOptions &max_frame_size(std::uint32_t v) {
        return set(plexus_channel_options_set_max_frame_size(get(), v));
    }
    ChannelOptions &connect_timeout_ms(std::uint64_t v) {
        return set(plexus_channel_options_set_connect_timeout_ms(get(), v));
    }
    ChannelOptions &multiple_connections(bool v) {
        return set(plexus_channel_options_set_multiple_connections(get(), v));
    }
    ChannelOptions &max_connections_per_endpoint(std::size_t v) {
        return set(plexus_channel_options_set_max_connections_per_endpoint(get(), v));
    }
    ChannelOptions &backoff(std::uint64_t initial_ms, double multiplier, double jitter,
                            std::uint64_t max_ms) {
        return set(plexus_channel_options_set_backoff(get(), initial_ms, multiplier, jitter, max_ms));
    }
    ChannelOptions &idle_timeout_ms(std::uint64_t v) {
        return set(plexus_channel_options_set_idle_timeout_ms(get(), v));
    }
    ChannelOptions &resolve_interval_ms(std::uint64_t v) {
        return set(plexus_channel_options_set_resolve_interval_ms(get(), v));
    }
    /// Compresses requests: "identity", "gzip" or "deflate".
    ChannelOptions &compression(const std::string &v) {
        return set(plexus_channel_options_set_compression(get(), v.c_str()));
    }
    /// TLS on or off.
    ChannelOptions &tls(bool v) { return set(plexus_channel_options_set_tls(get(), v)); }
    /// Trusts the CA certificate(s) in `pem`.
    ChannelOptions &add_tls_ca_pem(std::string_view pem) {
        return set(plexus_channel_options_add_tls_ca_pem(
            get(), reinterpret_cast<const std::uint8_t *>(pem.data()), pem.size()));
    }
    ChannelOptions &tls_native_roots(bool v) {
        return set(plexus_channel_options_set_tls_native_roots(get(), v));
    }
    ChannelOptions &tls_server_name(const std::string &v) {
        return set(plexus_channel_options_set_tls_server_name(get(), v.c_str()));
    }
    /// The client certificate chain and key (PEM) for mutual TLS.
    ChannelOptions &tls_identity_pem(std::string_view cert, std::string_view key) {
        return set(plexus_channel_options_set_tls_identity_pem(
            get(), reinterpret_cast<const std::uint8_t *>(cert.data()), cert.size(),
            reinterpret_cast<const std::uint8_t *>(key.data()), key.size()));
    }
    /// Runs `credentials` before each call to add its credentials (see CallCredentials).
    /// Channels made from these options keep a copy for as long as they need it.
    /// An empty function removes the credentials.
    ChannelOptions &call_credentials(CallCredentials credentials) {
        if (!credentials) {
            return set(plexus_channel_options_set_call_credentials(get(), nullptr, nullptr, nullptr));
        }
        auto *owned = new CallCredentials(std::move(credentials));
        // plexus owns `owned` from here, even on failure, and frees it once.
        return set(plexus_channel_options_set_call_credentials(
            get(), &detail::run_credentials, owned, &detail::free_credentials));
    }
    ChannelOptions &lb_policy(const std::string &v) {
        return set(plexus_channel_options_set_lb_policy(get(), v.c_str()));
    }
    ChannelOptions &user_agent(const std::string &v) {
        return set(plexus_channel_options_set_user_agent(get(), v.c_str()));
    }

  private:
    ChannelOptions &set(plexus_result rc) {
        detail::check(rc);
        return *this;
    }
};

/// Per-call settings.
class CallOptions : public detail::Handle<plexus_call_options, plexus_call_options_free> {
  public:
    using Handle::Handle;
    /// No deadline, no metadata.
    [[nodiscard]] static CallOptions create() {
        plexus_call_options *out = nullptr;
        detail::check(plexus_call_options_new(&out));
        return CallOptions(out);
    }
    /// The deadline, `ms` after the call starts (negative: none).
    CallOptions &timeout_ms(std::int64_t ms) {
        detail::check(plexus_call_options_set_timeout_ms(get(), ms));
        return *this;
    }
    /// The request metadata (copied).
    CallOptions &metadata(const Metadata &md) {
        detail::check(plexus_call_options_set_metadata(get(), md.get()));
        return *this;
    }
    /// Compresses this call's requests: "identity", "gzip" or "deflate".
    CallOptions &compression(const std::string &v) {
        detail::check(plexus_call_options_set_compression(get(), v.c_str()));
        return *this;
    }
    CallOptions &wait_for_ready(bool v) {
        detail::check(plexus_call_options_set_wait_for_ready(get(), v));
        return *this;
    }
    CallOptions &max_receive_message_size(std::size_t v) {
        detail::check(plexus_call_options_set_max_receive_message_size(get(), v));
        return *this;
    }
    CallOptions &max_send_message_size(std::size_t v) {
        detail::check(plexus_call_options_set_max_send_message_size(get(), v));
        return *this;
    }
};

/// No time limit for a blocking operation.
inline constexpr std::int64_t forever = -1;

class CompletionQueue;

/// A streaming call (client, server or bidirectional streaming).
class Call : public detail::Handle<const plexus_call, detail::free_call> {
  public:
    using Handle::Handle;
    /// Sends one message (throws on timeout, which cancels the call).
    void send(const Bytes &message, std::int64_t timeout_ms = forever) {
        detail::check(plexus_call_send(get(), message.get(), timeout_ms));
    }
    /// The next response message; std::nullopt once the call ended (see finish()).
    [[nodiscard]] std::optional<Bytes> recv(std::int64_t timeout_ms = forever) {
        plexus_bytes *out = nullptr;
        plexus_result rc = plexus_call_recv(get(), timeout_ms, &out);
        if (rc == PLEXUS_END_OF_STREAM) return std::nullopt;
        detail::check(rc);
        return Bytes(out);
    }
    /// Ends the request stream.
    void close_send(std::int64_t timeout_ms = forever) {
        detail::check(plexus_call_close_send(get(), timeout_ms));
    }
    /// The response headers' metadata.
    [[nodiscard]] Metadata initial_metadata(std::int64_t timeout_ms = forever) {
        plexus_metadata *out = nullptr;
        detail::check(plexus_call_initial_metadata(get(), timeout_ms, &out));
        return Metadata(out);
    }
    /// Waits for the end and returns the status, whatever its code (no RpcError).
    [[nodiscard]] Status finish(std::int64_t timeout_ms = forever) {
        plexus_status *out = nullptr;
        plexus_result rc = plexus_call_finish(get(), timeout_ms, &out);
        if (rc != PLEXUS_ERR_RPC) detail::check(rc);
        return Status(out);
    }
    /// Cancels the call.
    void cancel() { detail::check(plexus_call_cancel(get())); }

    inline void send_async(const Bytes &message, const CompletionQueue &cq, void *tag);
    inline void recv_async(const CompletionQueue &cq, void *tag);
    inline void close_send_async(const CompletionQueue &cq, void *tag);
    inline void finish_async(const CompletionQueue &cq, void *tag);
    inline void initial_metadata_async(const CompletionQueue &cq, void *tag);
};

/// The reply of a unary call.
struct Reply {
    Bytes message;
    Status status;
};

/// A finished asynchronous operation; owns what it carries.
struct Event {
    void *tag = nullptr;
    plexus_op op{};
    plexus_result result = PLEXUS_OK;
    Call call;
    Bytes message;
    Status status;
    Metadata metadata;
};

/// A completion queue for asynchronous operations.
class CompletionQueue : public detail::Handle<const plexus_cq, detail::free_cq> {
  public:
    using Handle::Handle;
    /// A new queue.
    [[nodiscard]] static CompletionQueue create() {
        const plexus_cq *out = nullptr;
        detail::check(plexus_cq_new(&out));
        return CompletionQueue(out);
    }
    /// The next event; std::nullopt on timeout. Throws Error(PLEXUS_ERR_SHUTDOWN) once shut
    /// down and drained.
    [[nodiscard]] std::optional<Event> next(std::int64_t timeout_ms = forever) const {
        plexus_event raw{};
        plexus_result rc = plexus_cq_next(get(), timeout_ms, &raw);
        if (rc == PLEXUS_ERR_TIMEOUT) return std::nullopt;
        detail::check(rc);
        Event ev;
        ev.tag = raw.tag;
        ev.op = raw.op;
        ev.result = raw.result;
        ev.call = Call(raw.call);
        ev.message = Bytes(raw.message);
        ev.status = Status(raw.status);
        ev.metadata = Metadata(raw.metadata);
        return ev;
    }
    /// A descriptor readable while events wait (an eventfd), for epoll or poll.
    [[nodiscard]] int fd() const {
        int out = -1;
        detail::check(plexus_cq_fd(get(), &out));
        return out;
    }
    /// Refuses new operations; next() drains, then reports the shutdown.
    void shutdown() const { detail::check(plexus_cq_shutdown(get())); }
};

inline void Call::send_async(const Bytes &message, const CompletionQueue &cq, void *tag) {
    detail::check(plexus_call_send_async(get(), message.get(), cq.get(), tag));
}
inline void Call::recv_async(const CompletionQueue &cq, void *tag) {
    detail::check(plexus_call_recv_async(get(), cq.get(), tag));
}
inline void Call::close_send_async(const CompletionQueue &cq, void *tag) {
    detail::check(plexus_call_close_send_async(get(), cq.get(), tag));
}
inline void Call::finish_async(const CompletionQueue &cq, void *tag) {
    detail::check(plexus_call_finish_async(get(), cq.get(), tag));
}
inline void Call::initial_metadata_async(const CompletionQueue &cq, void *tag) {
    detail::check(plexus_call_initial_metadata_async(get(), cq.get(), tag));
}

/// A channel to a target; thread-safe.
class Channel : public detail::Handle<const plexus_channel, detail::free_channel> {
  public:
    using Handle::Handle;
    /// A channel to `target`, with `options` or the defaults.
    [[nodiscard]] static Channel create(const std::string &target,
                                        const ChannelOptions *options = nullptr) {
        const plexus_channel *out = nullptr;
        detail::check(plexus_channel_new(target.c_str(), options ? options->get() : nullptr, &out));
        return Channel(out);
    }
    /// A blocking unary call; throws RpcError for a status other than OK.
    [[nodiscard]] Reply unary(const std::string &method, const Bytes &request,
                              const CallOptions *options = nullptr,
                              std::int64_t timeout_ms = forever) const {
        plexus_bytes *response = nullptr;
        plexus_status *status = nullptr;
        plexus_result rc = plexus_unary(get(), method.c_str(), request.get(),
                                        options ? options->get() : nullptr, timeout_ms, &response,
                                        &status);
        if (rc != PLEXUS_OK) detail::check_call(rc, status);
        return {Bytes(response), Status(status)};
    }
    /// Starts a client- or bidirectional-streaming call.
    [[nodiscard]] Call start(const std::string &method, const CallOptions *options = nullptr,
                             std::int64_t timeout_ms = forever) const {
        const plexus_call *call = nullptr;
        plexus_status *status = nullptr;
        plexus_result rc = plexus_call_start(get(), method.c_str(),
                                             options ? options->get() : nullptr, timeout_ms,
                                             &call, &status);
        if (rc != PLEXUS_OK) detail::check_call(rc, status);
        return Call(call);
    }
    /// Starts a server-streaming call with its one request.
    [[nodiscard]] Call start_server_streaming(const std::string &method, const Bytes &request,
                                              const CallOptions *options = nullptr,
                                              std::int64_t timeout_ms = forever) const {
        const plexus_call *call = nullptr;
        plexus_status *status = nullptr;
        plexus_result rc = plexus_call_start_server_streaming(
            get(), method.c_str(), request.get(), options ? options->get() : nullptr, timeout_ms,
            &call, &status);
        if (rc != PLEXUS_OK) detail::check_call(rc, status);
        return Call(call);
    }
    /// An asynchronous unary call reporting to `cq` with `tag`.
    void unary_async(const std::string &method, const Bytes &request, const CompletionQueue &cq,
                     void *tag, const CallOptions *options = nullptr) const {
        detail::check(plexus_unary_async(get(), method.c_str(), request.get(),
                                         options ? options->get() : nullptr, cq.get(), tag));
    }
    /// An asynchronous start reporting to `cq` (the event carries the Call).
    void start_async(const std::string &method, const CompletionQueue &cq, void *tag,
                     const CallOptions *options = nullptr) const {
        detail::check(plexus_call_start_async(get(), method.c_str(),
                                              options ? options->get() : nullptr, cq.get(), tag));
    }
    /// A snapshot of the channel's statistics.
    [[nodiscard]] plexus_channel_stats stats() const {
        plexus_channel_stats out{};
        detail::check(plexus_channel_get_stats(get(), &out));
        return out;
    }
    /// The connectivity state.
    [[nodiscard]] plexus_connectivity_state state() const {
        plexus_connectivity_state out{};
        detail::check(plexus_channel_state(get(), &out));
        return out;
    }
    /// Connects and waits for READY.
    void connect(std::int64_t timeout_ms = forever) const {
        detail::check(plexus_channel_connect(get(), timeout_ms));
    }
};

}  // namespace plexus

#endif  // PLEXUS_HPP
