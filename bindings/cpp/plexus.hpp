// plexus.hpp: a header-only C++17 wrapper over the plexus C ABI (include/plexus.h), client
// and server.
//
// Every handle is a move-only RAII object that frees its C handle once; results that must
// not be ignored are [[nodiscard]]; failures throw plexus::Error (plexus::RpcError, with the
// call's Status, when a call ended with a gRPC status other than OK). Thread-safety is the C
// ABI's: Channel, Call, CompletionQueue and Server may be used from several threads as
// plexus.h says; options and metadata objects are not for concurrent modification.
//
// Client: Channel makes unary calls and streaming Calls, blocking or through a
// CompletionQueue. Server: a Server registers one std::function handler per method path
// (unary, server-, client- or bidirectional streaming, plus an optional catch-all), listens on
// TCP, Unix or abstract sockets with or without TLS, and runs each handler on a thread of its
// own pool (start) or on the host's thread that feeds it events from the host's own
// CompletionQueue (start_on, handle_event); a unary handler that never waits may instead run
// on the plexus worker that received its call (unary_inline). A handler reads the call through its
// ServerContext, ServerReader and ServerWriter with the blocking ABI calls and returns a
// ServerStatus, or throws: ServerError becomes its status, any other exception UNKNOWN with
// its what(); no exception ever reaches C or ends the process.
#ifndef PLEXUS_HPP
#define PLEXUS_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

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
inline void free_server_call(const plexus_server_call *c) { plexus_server_call_free(c); }
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

class ServerContext;

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
    /// Makes the call a child of the server call `ctx` is handling: its deadline and
    /// cancellation propagate (the options keep that call alive).
    inline CallOptions &parent(const ServerContext &ctx);
};

/// No time limit for a blocking operation.
inline constexpr std::int64_t forever = -1;

class CompletionQueue;

/// One incoming call's C handle (from a PLEXUS_OP_SERVER_CALL event); freeing a call that was
/// not finished cancels it.
class ServerCall : public detail::Handle<const plexus_server_call, detail::free_server_call> {
  public:
    using Handle::Handle;
};

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
    /// PLEXUS_OP_SERVER_CALL: the incoming call (see Server::handle_event).
    ServerCall server_call;
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
        ev.server_call = ServerCall(raw.server_call);
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

// ---- server ----------------------------------------------------------------------------------

/// Server settings (see the plexus_server_options_set_* functions); copied by Server::create.
class ServerOptions : public detail::Handle<plexus_server_options, plexus_server_options_free> {
  public:
    using Handle::Handle;
    /// Every setting at its default.
    [[nodiscard]] static ServerOptions create() {
        plexus_server_options *out = nullptr;
        detail::check(plexus_server_options_new(&out));
        return ServerOptions(out);
    }
    /// Calls open at once over the whole server (0: no limit); the excess is answered
    /// RESOURCE_EXHAUSTED without reaching a handler.
    ServerOptions &max_concurrent_calls(std::uint32_t v) {
        return set(plexus_server_options_set_max_concurrent_calls(get(), v));
    }
    /// Streams open at once per connection.
    ServerOptions &max_concurrent_streams(std::uint32_t v) {
        return set(plexus_server_options_set_max_concurrent_streams(get(), v));
    }
    /// The largest request message accepted; a larger one ends its call RESOURCE_EXHAUSTED.
    ServerOptions &max_receive_message_size(std::size_t v) {
        return set(plexus_server_options_set_max_receive_message_size(get(), v));
    }
    /// The largest response message sent.
    ServerOptions &max_send_message_size(std::size_t v) {
        return set(plexus_server_options_set_max_send_message_size(get(), v));
    }
    /// The HTTP/2 stream window.
    ServerOptions &initial_stream_window_size(std::uint32_t v) {
        return set(plexus_server_options_set_initial_stream_window_size(get(), v));
    }
    /// The HTTP/2 connection window.
    ServerOptions &initial_connection_window_size(std::uint32_t v) {
        return set(plexus_server_options_set_initial_connection_window_size(get(), v));
    }
    /// Windows sized by measuring the connection (BDP) instead of fixed ones.
    ServerOptions &adaptive_window(bool v) {
        return set(plexus_server_options_set_adaptive_window(get(), v));
    }
    /// The largest HTTP/2 frame the server accepts.
    ServerOptions &max_frame_size(std::uint32_t v) {
        return set(plexus_server_options_set_max_frame_size(get(), v));
    }
    /// Interval of the server's keepalive pings (negative: off).
    ServerOptions &keepalive_time_ms(std::int64_t v) {
        return set(plexus_server_options_set_keepalive_time_ms(get(), v));
    }
    /// How long a keepalive ping may go unanswered before the connection closes.
    ServerOptions &keepalive_timeout_ms(std::int64_t v) {
        return set(plexus_server_options_set_keepalive_timeout_ms(get(), v));
    }
    /// The shortest interval between client pings the server tolerates.
    ServerOptions &keepalive_min_ping_interval_ms(std::int64_t v) {
        return set(plexus_server_options_set_keepalive_min_ping_interval_ms(get(), v));
    }
    /// Whether clients may ping while no call is open.
    ServerOptions &keepalive_permit_without_calls(bool v) {
        return set(plexus_server_options_set_keepalive_permit_without_calls(get(), v));
    }
    /// How long a new connection may take for its handshake.
    ServerOptions &handshake_timeout_ms(std::int64_t v) {
        return set(plexus_server_options_set_handshake_timeout_ms(get(), v));
    }
    /// The largest request header list accepted.
    ServerOptions &max_header_list_size(std::uint32_t v) {
        return set(plexus_server_options_set_max_header_list_size(get(), v));
    }
    /// Closes connections idle this long (negative: never).
    ServerOptions &max_connection_idle_ms(std::int64_t v) {
        return set(plexus_server_options_set_max_connection_idle_ms(get(), v));
    }
    /// Closes connections this old, gracefully (negative: never).
    ServerOptions &max_connection_age_ms(std::int64_t v) {
        return set(plexus_server_options_set_max_connection_age_ms(get(), v));
    }
    /// How long calls on an aged connection may still run (negative: no limit).
    ServerOptions &max_connection_age_grace_ms(std::int64_t v) {
        return set(plexus_server_options_set_max_connection_age_grace_ms(get(), v));
    }
    /// The default response compression: "identity", "gzip" or "deflate".
    ServerOptions &compression(const std::string &v) {
        return set(plexus_server_options_set_compression(get(), v.c_str()));
    }

  private:
    ServerOptions &set(plexus_result rc) {
        detail::check(rc);
        return *this;
    }
};

/// TLS for one listener: the certificate chain and key (PEM), checked when the listener is
/// added.
class ServerTls : public detail::Handle<plexus_server_tls, plexus_server_tls_free> {
  public:
    using Handle::Handle;
    /// Presents `cert_chain_pem` with `private_key_pem` (both copied).
    [[nodiscard]] static ServerTls create(const std::string &cert_chain_pem,
                                          const std::string &private_key_pem) {
        plexus_server_tls *out = nullptr;
        detail::check(plexus_server_tls_new(cert_chain_pem.c_str(), private_key_pem.c_str(), &out));
        return ServerTls(out);
    }
    /// Asks clients for a certificate signed by the roots in `ca_pem`; with `require` false,
    /// clients without one are let in too.
    ServerTls &client_ca(const std::string &ca_pem, bool require = true) {
        detail::check(plexus_server_tls_set_client_ca_pem(get(), ca_pem.c_str(), require));
        return *this;
    }
};

/// gRPC status codes, for ServerStatus and ServerError.
namespace code {
inline constexpr std::int32_t ok = 0;                   ///< OK
inline constexpr std::int32_t cancelled = 1;            ///< CANCELLED
inline constexpr std::int32_t unknown = 2;              ///< UNKNOWN
inline constexpr std::int32_t invalid_argument = 3;     ///< INVALID_ARGUMENT
inline constexpr std::int32_t deadline_exceeded = 4;    ///< DEADLINE_EXCEEDED
inline constexpr std::int32_t not_found = 5;            ///< NOT_FOUND
inline constexpr std::int32_t already_exists = 6;       ///< ALREADY_EXISTS
inline constexpr std::int32_t permission_denied = 7;    ///< PERMISSION_DENIED
inline constexpr std::int32_t resource_exhausted = 8;   ///< RESOURCE_EXHAUSTED
inline constexpr std::int32_t failed_precondition = 9;  ///< FAILED_PRECONDITION
inline constexpr std::int32_t aborted = 10;             ///< ABORTED
inline constexpr std::int32_t out_of_range = 11;        ///< OUT_OF_RANGE
inline constexpr std::int32_t unimplemented = 12;       ///< UNIMPLEMENTED
inline constexpr std::int32_t internal = 13;            ///< INTERNAL
inline constexpr std::int32_t unavailable = 14;         ///< UNAVAILABLE
inline constexpr std::int32_t data_loss = 15;           ///< DATA_LOSS
inline constexpr std::int32_t unauthenticated = 16;     ///< UNAUTHENTICATED
}  // namespace code

/// What a handler answers: the status code and message, and trailing metadata to send with
/// it (added to the context's trailers). A binary trailer "grpc-status-details-bin" becomes
/// the status details.
struct ServerStatus {
    /// The gRPC status code (0..16; 0 is OK).
    std::int32_t code = code::ok;
    /// The status message.
    std::string message;
    /// Trailing metadata; may stay empty (no handle).
    Metadata trailers;

    /// OK.
    ServerStatus() = default;
    /// `code` with `message`.
    ServerStatus(std::int32_t code_, std::string message_)
        : code(code_), message(std::move(message_)) {}
    /// `code` with `message` and `trailers`.
    ServerStatus(std::int32_t code_, std::string message_, Metadata trailers_)
        : code(code_), message(std::move(message_)), trailers(std::move(trailers_)) {}
    /// Whether the code is OK.
    [[nodiscard]] bool ok() const noexcept { return code == code::ok; }
};

/// Thrown by a handler to end its call with `code` and the message what(), like returning
/// ServerStatus(code, message).
class ServerError : public std::runtime_error {
  public:
    ServerError(std::int32_t code, const std::string &message)
        : std::runtime_error(message), code_(code) {}
    /// The gRPC status code.
    [[nodiscard]] std::int32_t code() const noexcept { return code_; }

  private:
    std::int32_t code_;
};

namespace detail {
inline void finish_call(ServerContext &ctx, const Bytes *response, ServerStatus status) noexcept;

/// Appends every entry of `from` to `to`.
inline void append_all(Metadata &to, const MetadataReader &from) {
    std::size_t n = from.size();
    for (std::size_t i = 0; i < n; i++) {
        MetadataEntry e = from.entry(i);
        if (e.binary) {
            to.append_bin(std::string(e.key), e.value);
        } else {
            to.append(std::string(e.key), std::string(e.value));
        }
    }
}
}  // namespace detail

/// One incoming call as its handler sees it: what the client sent besides messages, and
/// what the server sends besides messages. Valid during the handler; usable from the
/// handler's other threads while it runs.
class ServerContext {
  public:
    /// Takes the incoming call.
    explicit ServerContext(ServerCall call) : call_(std::move(call)) {}
    ServerContext(const ServerContext &) = delete;
    ServerContext &operator=(const ServerContext &) = delete;

    /// The C handle, still owned by this context.
    [[nodiscard]] const plexus_server_call *call() const noexcept { return call_.get(); }
    /// The full method path, "/package.Service/Method".
    [[nodiscard]] std::string_view method() const {
        const char *out = nullptr;
        detail::check(plexus_server_call_method(call(), &out));
        return out;
    }
    /// The client's address: "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555" or "unix:".
    [[nodiscard]] std::string_view peer() const {
        const char *out = nullptr;
        detail::check(plexus_server_call_peer(call(), &out));
        return out;
    }
    /// The request metadata.
    [[nodiscard]] MetadataReader metadata() const {
        const plexus_metadata *out = nullptr;
        detail::check(plexus_server_call_metadata(call(), &out));
        return MetadataReader(out);
    }
    /// Milliseconds left before the client's deadline (0 once passed), -1 when it set none.
    [[nodiscard]] std::int64_t remaining_ms() const {
        std::int64_t out = -1;
        detail::check(plexus_server_call_deadline(call(), &out));
        return out;
    }
    /// The time left before the client's deadline; std::nullopt when it set none.
    [[nodiscard]] std::optional<std::chrono::milliseconds> time_remaining() const {
        std::int64_t ms = remaining_ms();
        if (ms < 0) return std::nullopt;
        return std::chrono::milliseconds(ms);
    }
    /// Whether the call is over for the handler: the client cancelled, the deadline passed
    /// or the connection went away (also true once it ended normally).
    [[nodiscard]] bool is_cancelled() const {
        bool out = false;
        detail::check(plexus_server_call_is_cancelled(call(), &out));
        return out;
    }
    /// Whether the last request message handed to the handler (the unary or server-streaming
    /// request, or the last one read) arrived compressed; it was inflated either way.
    [[nodiscard]] bool last_message_compressed() const {
        bool out = false;
        detail::check(plexus_server_call_last_message_compressed(call(), &out));
        return out;
    }
    /// Response compression for this call ("identity", "gzip", "deflate"); applies when the
    /// client accepts it and the response headers have not gone out yet.
    void set_compression(const std::string &name) {
        detail::check(plexus_server_call_set_compression(call(), name.c_str()));
    }
    /// Sends the response headers now with `md` (only before the first message); otherwise
    /// they go out with the first message or the status.
    void send_initial_metadata(const Metadata &md, std::int64_t timeout_ms = forever) {
        detail::check(plexus_server_call_send_initial_metadata(call(), md.get(), timeout_ms));
    }
    /// Trailing metadata sent with the status; add to it during the handler.
    [[nodiscard]] Metadata &trailers() {
        if (!trailers_) trailers_ = Metadata::create();
        return trailers_;
    }
    /// Ends the call now with CANCELLED (the client sees CANCELLED); the handler's status
    /// then goes nowhere.
    void cancel() { detail::check(plexus_server_call_cancel(call())); }

  private:
    friend void detail::finish_call(ServerContext &ctx, const Bytes *response,
                                    ServerStatus status) noexcept;
    ServerCall call_;
    Metadata trailers_;
};

namespace detail {
/// Sends the status (with `response` first unless null): the end of every handler. Never
/// throws; an invalid code becomes UNKNOWN.
inline void finish_call(ServerContext &ctx, const Bytes *response, ServerStatus status) noexcept {
    const plexus_server_call *call = ctx.call();
    try {
        if (status.trailers) append_all(ctx.trailers(), status.trailers.read());
        plexus_result rc = plexus_server_call_finish(call, response ? response->get() : nullptr,
                                                     status.code, status.message.c_str(),
                                                     ctx.trailers_.get());
        if (rc == PLEXUS_ERR_INVALID_ARGUMENT) {
            std::string why = "the handler answered the invalid status code " +
                              std::to_string(status.code) + ": " + status.message;
            (void)plexus_server_call_finish(call, nullptr, code::unknown, why.c_str(),
                                            ctx.trailers_.get());
        }
    } catch (...) {
        // Copying the trailers failed (out of memory): end the call without them.
        (void)plexus_server_call_finish(call, nullptr, code::unknown,
                                        "the handler's trailers could not be sent", nullptr);
    }
}
}  // namespace detail

inline CallOptions &CallOptions::parent(const ServerContext &ctx) {
    detail::check(plexus_call_options_set_parent(get(), ctx.call()));
    return *this;
}

/// The request messages of a client- or bidirectional-streaming call.
class ServerReader {
  public:
    /// Reads `ctx`'s call.
    explicit ServerReader(ServerContext &ctx) noexcept : ctx_(ctx) {}
    /// Waits for the next request into `message`; false when the client half-closed or the
    /// call ended. Throws Error(PLEXUS_ERR_RPC) when the request stream failed (a message
    /// over the size limit, bad compression, the connection cut): the call is then over,
    /// and what the handler answers goes nowhere.
    [[nodiscard]] bool read(Bytes &message, std::int64_t timeout_ms = forever) {
        plexus_bytes *out = nullptr;
        plexus_result rc = plexus_server_call_recv(ctx_.call(), timeout_ms, &out);
        if (rc == PLEXUS_END_OF_STREAM) return false;
        detail::check(rc);
        message = Bytes(out);
        return true;
    }

  private:
    ServerContext &ctx_;
};

/// The response messages of a server- or bidirectional-streaming call.
class ServerWriter {
  public:
    /// Writes to `ctx`'s call.
    explicit ServerWriter(ServerContext &ctx) noexcept : ctx_(ctx) {}
    /// Sends one response, waiting for flow control; `flags` 0 or PLEXUS_SEND_NO_COMPRESS
    /// (this one message uncompressed on a compressing call). False when the call is over
    /// (cancelled, deadline passed): the handler may stop.
    bool write(const Bytes &message, std::uint32_t flags = 0, std::int64_t timeout_ms = forever) {
        plexus_result rc = plexus_server_call_send(ctx_.call(), message.get(), flags, timeout_ms);
        if (rc == PLEXUS_ERR_RPC) return false;
        detail::check(rc);
        return true;
    }

  private:
    ServerContext &ctx_;
};

/// A unary handler: the request in, the response out (sent when the status is OK).
using UnaryHandler =
    std::function<ServerStatus(ServerContext &ctx, const Bytes &request, Bytes &response)>;
/// A server-streaming handler: the request in, responses written.
using ServerStreamingHandler =
    std::function<ServerStatus(ServerContext &ctx, const Bytes &request, ServerWriter &writer)>;
/// A client-streaming handler: requests read, the response out (sent when the status is OK).
using ClientStreamingHandler =
    std::function<ServerStatus(ServerContext &ctx, ServerReader &reader, Bytes &response)>;
/// A bidirectional-streaming handler, also the shape of the catch-all (ctx.method() says
/// which method was called).
using BidiStreamingHandler =
    std::function<ServerStatus(ServerContext &ctx, ServerReader &reader, ServerWriter &writer)>;

namespace detail {
/// One registered method: its path, kind and handler; its address is the event tag.
struct ServerMethod {
    std::string path;
    plexus_method_kind kind;
    bool catch_all;
    /// Run on the plexus worker that received the call (unary_inline), not a handler thread.
    bool on_worker;
    UnaryHandler unary;
    ServerStreamingHandler server_streaming;
    ClientStreamingHandler client_streaming;
    BidiStreamingHandler bidi;
};

/// Runs `handler` and turns what it returns or throws into the call's status.
template <typename F>
inline ServerStatus run_handler(F &&handler) noexcept {
    try {
        return handler();
    } catch (const ServerError &e) {
        return ServerStatus(e.code(), e.what());
    } catch (const std::exception &e) {
        return ServerStatus(code::unknown, std::string("Exception calling application: ") + e.what());
    } catch (...) {
        return ServerStatus(code::unknown, "Exception calling application: unknown exception");
    }
}

/// Handles one incoming call with `method`'s handler on this thread, then finishes it.
inline void dispatch(const ServerMethod &method, ServerCall call, Bytes request) noexcept {
    ServerContext ctx(std::move(call));
    Bytes response;
    ServerStatus status;
    switch (method.kind) {
        case PLEXUS_METHOD_UNARY:
            status = run_handler([&] { return method.unary(ctx, request, response); });
            break;
        case PLEXUS_METHOD_SERVER_STREAMING:
            status = run_handler([&] {
                ServerWriter writer(ctx);
                return method.server_streaming(ctx, request, writer);
            });
            break;
        case PLEXUS_METHOD_CLIENT_STREAMING:
            status = run_handler([&] {
                ServerReader reader(ctx);
                return method.client_streaming(ctx, reader, response);
            });
            break;
        default:
            status = run_handler([&] {
                ServerReader reader(ctx);
                ServerWriter writer(ctx);
                return method.bidi(ctx, reader, writer);
            });
            break;
    }
    bool answers = status.ok() && (method.kind == PLEXUS_METHOD_UNARY ||
                                   method.kind == PLEXUS_METHOD_CLIENT_STREAMING);
    if (answers && !response) {
        // An OK unary answer needs a message: an empty one is the empty protobuf message.
        try {
            response = Bytes::copy("", 0);
        } catch (...) {
            status = ServerStatus(code::internal, "the response could not be allocated");
        }
    }
    finish_call(ctx, answers && response ? &response : nullptr, std::move(status));
}

/// The callback of a method served on plexus's workers: `user_data` is its ServerMethod.
inline void dispatch_on_worker(void *user_data, const plexus_server_call *call,
                               plexus_bytes *request) noexcept {
    dispatch(*static_cast<const ServerMethod *>(user_data), ServerCall(call), Bytes(request));
}

/// What a Server owns behind its handle, at a fixed address for the tags and threads.
struct ServerState {
    const plexus_server *raw = nullptr;
    std::vector<std::unique_ptr<ServerMethod>> methods;
    bool has_catch_all = false;
    CompletionQueue own_cq;
    std::vector<std::thread> workers;
    std::mutex mutex;
    std::condition_variable stopped_cv;
    bool started = false;
    bool stopped = false;
    /// Set once shutdown returned: calls still queued are cancelled, not handled.
    std::atomic<bool> draining{false};

    /// The method whose tag `tag` is, or null.
    [[nodiscard]] const ServerMethod *method_of(void *tag) const noexcept {
        for (const auto &m : methods) {
            if (m.get() == tag) return m.get();
        }
        return nullptr;
    }
    /// Runs handlers for the events of its own queue until the queue is shut down.
    void work() noexcept {
        for (;;) {
            std::optional<Event> ev;
            try {
                ev = own_cq.next(forever);
            } catch (...) {
                return;  // shut down and drained
            }
            if (!ev || ev->op != PLEXUS_OP_SERVER_CALL) continue;
            const ServerMethod *method = method_of(ev->tag);
            if (method == nullptr || ev->result != PLEXUS_OK || draining) continue;
            dispatch(*method, std::move(ev->server_call), std::move(ev->message));
        }
    }
};
}  // namespace detail

/// A gRPC server: handlers registered by method path, listeners, and the threads that run
/// the handlers. Destroying it shuts it down with no grace (calls in flight are cancelled)
/// and waits for its handlers to return.
class Server {
  public:
    /// A server with `options` or the defaults; it listens once start() runs.
    [[nodiscard]] static Server create(const ServerOptions *options = nullptr) {
        auto state = std::make_unique<detail::ServerState>();
        detail::check(plexus_server_new(options ? options->get() : nullptr, &state->raw));
        return Server(std::move(state));
    }
    Server(Server &&) noexcept = default;
    Server &operator=(Server &&other) noexcept {
        if (this != &other) {
            close();
            state_ = std::move(other.state_);
        }
        return *this;
    }
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;
    ~Server() { close(); }

    /// The C handle, still owned by this object.
    [[nodiscard]] const plexus_server *get() const noexcept { return state_ ? state_->raw : nullptr; }

    /// Listens on `address` ("host:port", "[v6]:port", "unix:PATH", "unix-abstract:NAME"),
    /// with TLS when `tls` is given; returns the bound TCP port (port 0 picks one; 0 for Unix
    /// sockets).
    int add_listener(const std::string &address, const ServerTls *tls = nullptr) {
        std::int32_t port = 0;
        detail::check(plexus_server_add_listener(get(), address.c_str(),
                                                 tls ? tls->get() : nullptr, &port));
        return port;
    }
    /// Serves `path` ("/package.Service/Method") with a unary handler.
    Server &unary(const std::string &path, UnaryHandler handler) {
        auto m = method(path, PLEXUS_METHOD_UNARY);
        m->unary = std::move(handler);
        return add(std::move(m));
    }
    /// Serves `path` with a unary handler run on the plexus worker that received the call,
    /// as it arrives: no queue and no hand-off to a handler thread, the fastest way to serve
    /// a handler that never waits. It must not block: the context's waiting operations
    /// (send_initial_metadata, read, write) throw Error(PLEXUS_ERR_WRONG_STATE) there, as do
    /// blocking client calls.
    Server &unary_inline(const std::string &path, UnaryHandler handler) {
        auto m = method(path, PLEXUS_METHOD_UNARY);
        m->on_worker = true;
        m->unary = std::move(handler);
        return add(std::move(m));
    }
    /// Serves `path` with a server-streaming handler.
    Server &server_streaming(const std::string &path, ServerStreamingHandler handler) {
        auto m = method(path, PLEXUS_METHOD_SERVER_STREAMING);
        m->server_streaming = std::move(handler);
        return add(std::move(m));
    }
    /// Serves `path` with a client-streaming handler.
    Server &client_streaming(const std::string &path, ClientStreamingHandler handler) {
        auto m = method(path, PLEXUS_METHOD_CLIENT_STREAMING);
        m->client_streaming = std::move(handler);
        return add(std::move(m));
    }
    /// Serves `path` with a bidirectional-streaming handler.
    Server &bidi_streaming(const std::string &path, BidiStreamingHandler handler) {
        auto m = method(path, PLEXUS_METHOD_BIDI_STREAMING);
        m->bidi = std::move(handler);
        return add(std::move(m));
    }
    /// Serves every path not registered (otherwise those get UNIMPLEMENTED); the handler
    /// reads and writes raw messages whatever the method's kind.
    Server &catch_all(BidiStreamingHandler handler) {
        if (state_->has_catch_all) {
            throw Error(PLEXUS_ERR_WRONG_STATE, "the server already has a catch-all handler");
        }
        auto m = method("", PLEXUS_METHOD_BIDI_STREAMING);
        m->catch_all = true;
        m->bidi = std::move(handler);
        state_->has_catch_all = true;
        return add(std::move(m));
    }

    /// Starts serving with `threads` handler threads (0: one per core, at least 2), each
    /// running one handler at a time: a handler blocked in read or write holds its thread,
    /// so size the pool for the streams expected at once.
    void start(std::size_t threads = 0) {
        if (threads == 0) threads = std::max(2u, std::thread::hardware_concurrency());
        state_->own_cq = CompletionQueue::create();
        start_on(state_->own_cq);
        for (std::size_t i = 0; i < threads; i++) {
            state_->workers.emplace_back([state = state_.get()] { state->work(); });
        }
    }
    /// Starts serving with events for `cq`, a queue the host drains: each event goes to
    /// handle_event, which runs the handler on the host's thread. `cq` must outlive the
    /// server's serving.
    void start_on(const CompletionQueue &cq) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        if (state_->started) throw Error(PLEXUS_ERR_WRONG_STATE, "the server already started");
        for (const auto &m : state_->methods) {
            if (m->catch_all) {
                detail::check(plexus_server_register_catch_all(get(), cq.get(), m.get()));
            } else if (m->on_worker) {
                detail::check(plexus_server_register_method_callback(
                    get(), m->path.c_str(), m->kind, detail::dispatch_on_worker, m.get()));
            } else {
                detail::check(plexus_server_register_method(get(), m->path.c_str(), m->kind,
                                                            cq.get(), m.get()));
            }
        }
        detail::check(plexus_server_start(get()));
        state_->started = true;
    }
    /// Runs the handler of a PLEXUS_OP_SERVER_CALL event of this server (from the queue given
    /// to start_on) on this thread and finishes its call; false (nothing done) for any other
    /// event.
    bool handle_event(Event &event) {
        if (event.op != PLEXUS_OP_SERVER_CALL) return false;
        const detail::ServerMethod *method = state_->method_of(event.tag);
        if (method == nullptr) return false;
        if (event.result == PLEXUS_OK && event.server_call) {
            detail::dispatch(*method, std::move(event.server_call), std::move(event.message));
        }
        return true;
    }
    /// Stops accepting, lets calls in flight finish for `grace_ms` (negative: no limit),
    /// cancels the rest, and returns once every connection is closed and, with start(),
    /// every handler thread has returned. Must not run on a handler thread. Idempotent.
    void shutdown(std::int64_t grace_ms = forever) {
        detail::ServerState &s = *state_;
        for (const auto &worker : s.workers) {
            if (worker.get_id() == std::this_thread::get_id()) {
                throw Error(PLEXUS_ERR_WRONG_STATE, "Server::shutdown ran on a handler thread");
            }
        }
        detail::check(plexus_server_shutdown(get(), grace_ms));
        std::vector<std::thread> workers;
        {
            std::lock_guard<std::mutex> lock(s.mutex);
            workers.swap(s.workers);
        }
        if (!workers.empty()) {
            // Calls still queued belong to closed connections: the workers free them.
            s.draining = true;
            s.own_cq.shutdown();
            for (auto &worker : workers) worker.join();
        }
        {
            std::lock_guard<std::mutex> lock(s.mutex);
            s.stopped = true;
        }
        s.stopped_cv.notify_all();
    }
    /// Waits until shutdown() has finished (on another thread).
    void wait() {
        std::unique_lock<std::mutex> lock(state_->mutex);
        state_->stopped_cv.wait(lock, [&] { return state_->stopped; });
    }

  private:
    explicit Server(std::unique_ptr<detail::ServerState> state) noexcept : state_(std::move(state)) {}

    static std::unique_ptr<detail::ServerMethod> method(const std::string &path,
                                                        plexus_method_kind kind) {
        auto m = std::make_unique<detail::ServerMethod>();
        m->path = path;
        m->kind = kind;
        m->catch_all = false;
        m->on_worker = false;
        return m;
    }
    Server &add(std::unique_ptr<detail::ServerMethod> m) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        if (state_->started) {
            throw Error(PLEXUS_ERR_WRONG_STATE, "methods are registered before the server starts");
        }
        state_->methods.push_back(std::move(m));
        return *this;
    }
    /// Shuts down (no grace), joins the handler threads and frees the C handle.
    void close() noexcept {
        if (!state_) return;
        try {
            shutdown(0);
        } catch (...) {
            // The workers still have to return: their queue's shutdown ends them.
            if (state_->own_cq) (void)plexus_cq_shutdown(state_->own_cq.get());
        }
        for (auto &worker : state_->workers) {
            if (worker.joinable()) worker.join();
        }
        plexus_server_free(state_->raw);
        state_.reset();
    }

    std::unique_ptr<detail::ServerState> state_;
};

}  // namespace plexus

#endif  // PLEXUS_HPP
