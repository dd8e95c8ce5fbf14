/* Every exported function of plexus.h against the echo server: unary and every stream kind,
 * cancel, deadlines, metadata, status details, buffers, options, the completion queue with
 * an epoll loop on its fd, shared channels, and an error for each kind of bad argument. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const plexus_channel *channel;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- library, runtime, names ---- */

static void test_names_and_runtime(void) {
    CHECK(strlen(plexus_version()) > 0);
    CHECK(strcmp(plexus_result_name(PLEXUS_ERR_TIMEOUT), "PLEXUS_ERR_TIMEOUT") == 0);
    CHECK(strcmp(plexus_result_name(PLEXUS_OK), "PLEXUS_OK") == 0);
    CHECK(strcmp(plexus_result_name(12345), "PLEXUS_UNKNOWN_RESULT") == 0);
    CHECK(strcmp(plexus_code_name(4), "DEADLINE_EXCEEDED") == 0);
    CHECK(strcmp(plexus_code_name(0), "OK") == 0);
    CHECK(strcmp(plexus_code_name(99), "UNKNOWN") == 0);

    OK(plexus_init(0));
    uint32_t threads = 0;
    OK(plexus_runtime_threads(&threads));
    CHECK(threads >= 1);
    OK(plexus_init(threads));
    EXPECT(plexus_init(threads + 1), PLEXUS_ERR_WRONG_STATE);
    CHECK(strstr(plexus_last_error(), "plexus_init") != NULL);
    EXPECT(plexus_init(100000), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_runtime_threads(NULL), PLEXUS_ERR_NULL_ARGUMENT);
}

/* ---- buffers ---- */

static atomic_int released;
static void count_release(void *context) {
    CHECK(context == (void *)&released);
    atomic_fetch_add(&released, 1);
}

/* Waits (up to LONG_MS) for the release count to reach `n`: the release happens on a plexus
 * thread once the connection has written the message, an event we cannot wait on directly. */
static void wait_released(int n) {
    for (int waited = 0; atomic_load(&released) < n && waited < LONG_MS; waited += 5) sleep_ms(5);
    CHECK(atomic_load(&released) == n);
}

static void test_bytes(void) {
    plexus_bytes *b = NULL;
    OK(plexus_bytes_copy((const uint8_t *)"hello", 5, &b));
    const uint8_t *data = NULL;
    size_t len = 0;
    OK(plexus_bytes_data(b, &data, &len));
    CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
    plexus_bytes_free(b);

    OK(plexus_bytes_copy(NULL, 0, &b));
    OK(plexus_bytes_data(b, &data, &len));
    CHECK(len == 0);
    plexus_bytes_free(b);
    plexus_bytes_free(NULL);

    EXPECT(plexus_bytes_copy(NULL, 3, &b), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_bytes_copy((const uint8_t *)"x", 1, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_bytes_data(NULL, &data, &len), PLEXUS_ERR_NULL_ARGUMENT);

    /* Wrapped memory: read in place, released exactly once when freed. */
    static const uint8_t text[] = "wrapped";
    atomic_store(&released, 0);
    OK(plexus_bytes_wrap(text, 7, count_release, &released, &b));
    OK(plexus_bytes_data(b, &data, &len));
    CHECK(data == text && len == 7);
    CHECK(atomic_load(&released) == 0);
    plexus_bytes_free(b);
    CHECK(atomic_load(&released) == 1);

    /* Static memory needs no release. */
    OK(plexus_bytes_wrap(text, 7, NULL, NULL, &b));
    plexus_bytes_free(b);

    /* Failure still releases, once. */
    EXPECT(plexus_bytes_wrap(NULL, 7, count_release, &released, &b), PLEXUS_ERR_NULL_ARGUMENT);
    CHECK(atomic_load(&released) == 2);
    EXPECT(plexus_bytes_wrap(text, 7, count_release, &released, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    CHECK(atomic_load(&released) == 3);
}

/* A 1 MiB request wrapped without a copy travels to the server and back; its memory is
 * released once, after both the handle is freed and the send is done. */
static void test_wrapped_large_message(void) {
    size_t n = 1 << 20;
    uint8_t *payload = malloc(n);
    CHECK(payload != NULL);
    for (size_t i = 0; i < n; i++) payload[i] = (uint8_t)(i * 7);
    /* The request is the protobuf header of field 6 followed by the payload: build the
     * header by hand so the payload itself is sent from the wrapped memory. */
    uint8_t *message = malloc(n + 8);
    CHECK(message != NULL);
    size_t h = 0;
    message[h++] = (6 << 3) | 2;
    size_t v = n;
    while (v >= 0x80) {
        message[h++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    message[h++] = (uint8_t)v;
    memcpy(message + h, payload, n);

    atomic_store(&released, 0);
    plexus_bytes *request = NULL;
    OK(plexus_bytes_wrap(message, h + n, count_release, &released, &request));
    plexus_bytes *response = NULL;
    plexus_status *status = NULL;
    OK(plexus_unary(channel, UNARY, request, NULL, LONG_MS, &response, &status));
    plexus_bytes_free(request);
    echo_response r = decode_response(response);
    CHECK(r.payload_len == n && memcmp(r.payload, payload, n) == 0);
    wait_released(1);
    plexus_bytes_free(response);
    plexus_status_free(status);
    free(message);
    free(payload);

    /* Over the per-call receive limit: RESOURCE_EXHAUSTED. */
    plexus_call_options *opts = NULL;
    OK(plexus_call_options_new(&opts));
    OK(plexus_call_options_set_max_receive_message_size(opts, 1000));
    OK(plexus_call_options_set_max_send_message_size(opts, 1 << 21));
    uint8_t big[4000] = {0};
    echo_request req = {0};
    req.payload = big;
    req.payload_len = sizeof big;
    request = encode_request(&req);
    EXPECT(plexus_unary(channel, UNARY, request, opts, LONG_MS, &response, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 8);
    plexus_status_free(status);
    /* Over the send limit: fails before sending. */
    OK(plexus_call_options_set_max_send_message_size(opts, 100));
    EXPECT(plexus_unary(channel, UNARY, request, opts, LONG_MS, &response, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 8);
    plexus_status_free(status);
    plexus_bytes_free(request);
    plexus_call_options_free(opts);
}

/* ---- metadata ---- */

static void test_metadata(void) {
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "x-a", "one"));
    OK(plexus_metadata_append(md, "x-a", "two"));
    static const uint8_t bin[] = {0, 1, 0xff};
    OK(plexus_metadata_append_bin(md, "x-b-bin", bin, sizeof bin));
    OK(plexus_metadata_append_bin(md, "x-empty-bin", NULL, 0));
    size_t len = 0;
    OK(plexus_metadata_len(md, &len));
    CHECK(len == 4);
    plexus_metadata_entry e;
    OK(plexus_metadata_get_entry(md, 0, &e));
    CHECK(strcmp(e.key, "x-a") == 0 && e.key_len == 3 && !e.binary);
    CHECK(e.value_len == 3 && strcmp((const char *)e.value, "one") == 0);
    OK(plexus_metadata_get_entry(md, 2, &e));
    CHECK(e.binary && e.value_len == 3 && memcmp(e.value, bin, 3) == 0);
    EXPECT(plexus_metadata_get_entry(md, 4, &e), PLEXUS_ERR_INVALID_ARGUMENT);
    const uint8_t *value = NULL;
    OK(plexus_metadata_get(md, "x-a", &value, &len));
    CHECK(len == 3 && memcmp(value, "one", 3) == 0);
    OK(plexus_metadata_get(md, "absent", &value, &len));
    CHECK(value == NULL && len == 0);

    /* Bad keys and values leave the metadata unchanged. */
    EXPECT(plexus_metadata_append(md, "Upper", "v"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "grpc-status", "0"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "x-bin", "v"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "x", "line\nbreak"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "", "v"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append_bin(md, "x-text", bin, 3), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "x-\xff", "v"), PLEXUS_ERR_INVALID_UTF8);
    EXPECT(plexus_metadata_append(md, "x", "caf\xc3\xa9"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "x", "\xc3"), PLEXUS_ERR_INVALID_UTF8);
    EXPECT(plexus_metadata_append(NULL, "x", "v"), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_append(md, NULL, "v"), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_append(md, "x", NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_append_bin(md, "x-bin", NULL, 2), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_len(md, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_get_entry(NULL, 0, &e), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_get(md, NULL, &value, &len), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_metadata_new(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_metadata_len(md, &len));
    CHECK(len == 4);
    plexus_metadata_free(md);
    plexus_metadata_free(NULL);
}

/* ---- options ---- */

static void test_options(void) {
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_shared(o, true));
    OK(plexus_channel_options_set_max_receive_message_size(o, 8 << 20));
    OK(plexus_channel_options_set_max_send_message_size(o, 8 << 20));
    OK(plexus_channel_options_set_initial_stream_window_size(o, 1 << 20));
    OK(plexus_channel_options_set_initial_connection_window_size(o, 4 << 20));
    OK(plexus_channel_options_set_adaptive_window(o, false));
    OK(plexus_channel_options_set_keepalive_time_ms(o, 60000));
    OK(plexus_channel_options_set_keepalive_timeout_ms(o, 10000));
    OK(plexus_channel_options_set_keepalive_permit_without_calls(o, false));
    OK(plexus_channel_options_set_max_frame_size(o, 32768));
    OK(plexus_channel_options_set_connect_timeout_ms(o, 5000));
    OK(plexus_channel_options_set_multiple_connections(o, true));
    OK(plexus_channel_options_set_max_connections_per_endpoint(o, 4));
    OK(plexus_channel_options_set_backoff(o, 100, 1.6, 0.2, 5000));
    OK(plexus_channel_options_set_idle_timeout_ms(o, 600000));
    OK(plexus_channel_options_set_resolve_interval_ms(o, 60000));
    OK(plexus_channel_options_set_min_resolve_interval_ms(o, 1000));
    OK(plexus_channel_options_set_lb_policy(o, "round_robin"));
    OK(plexus_channel_options_set_user_agent(o, "plexus-c-test/1"));
    OK(plexus_channel_options_set_service_config(
        o, "{\"methodConfig\": [{\"name\": [{}], \"timeout\": \"30s\", \"retryPolicy\": {"
           "\"maxAttempts\": 3, \"initialBackoff\": \"0.1s\", \"maxBackoff\": \"1s\", "
           "\"backoffMultiplier\": 2, \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}"));
    OK(plexus_channel_options_set_enable_retries(o, true));
    OK(plexus_channel_options_set_health_checking(o, false));
    OK(plexus_channel_options_set_authority(o, "virtual.example:443"));
    OK(plexus_channel_options_set_per_call_retry_buffer_size(o, 64 * 1024));
    OK(plexus_channel_options_set_retry_buffer_size(o, 8 * 1024 * 1024));

    /* Every out-of-range value is refused with a reason. */
    EXPECT(plexus_channel_options_set_initial_stream_window_size(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_initial_connection_window_size(o, 0x80000000u),
           PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_keepalive_timeout_ms(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_max_frame_size(o, 1000), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_connect_timeout_ms(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_max_connections_per_endpoint(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_backoff(o, 100, 0.5, 0.2, 5000), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_backoff(o, 0, 1.6, 0.2, 5000), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_backoff(o, 100, 1.6, 1.5, 5000), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_idle_timeout_ms(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_resolve_interval_ms(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_min_resolve_interval_ms(o, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_lb_policy(o, "fastest"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_lb_policy(o, "\xff"), PLEXUS_ERR_INVALID_UTF8);
    EXPECT(plexus_channel_options_set_user_agent(o, "tab\there"), PLEXUS_ERR_INVALID_ARGUMENT);
    /* A malformed service config names the field; the options keep the previous one. */
    EXPECT(plexus_channel_options_set_service_config(
               o, "{\"methodConfig\": [{\"retryPolicy\": {\"maxAttempts\": 1}}]}"),
           PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "methodConfig[0].retryPolicy.maxAttempts") != NULL);
    EXPECT(plexus_channel_options_set_service_config(o, "not json"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_enable_retries(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_health_checking(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_authority(o, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_per_call_retry_buffer_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_retry_buffer_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_service_config(NULL, "{}"), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_lb_policy(o, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_shared(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_max_receive_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_max_send_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_adaptive_window(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_keepalive_time_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_keepalive_permit_without_calls(NULL, true),
           PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_multiple_connections(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_user_agent(NULL, "x"), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_new(NULL), PLEXUS_ERR_NULL_ARGUMENT);

    /* A channel with every option set works. */
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(test_target(), o, &ch));
    plexus_channel_options_free(o);
    plexus_bytes *req = request_text("options"), *resp = NULL;
    OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL));
    CHECK(response_is(resp, "options"));
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
    plexus_channel_options_free(NULL);

    /* Settings that only conflict together are refused when the channel is made. */
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_initial_stream_window_size(o, 1 << 20));
    OK(plexus_channel_options_set_initial_connection_window_size(o, 1 << 10));
    EXPECT(plexus_channel_new(test_target(), o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    plexus_channel_options_free(o);

    plexus_call_options *c = NULL;
    OK(plexus_call_options_new(&c));
    OK(plexus_call_options_set_timeout_ms(c, 5000));
    OK(plexus_call_options_set_timeout_ms(c, -1));
    OK(plexus_call_options_set_wait_for_ready(c, true));
    OK(plexus_call_options_set_max_receive_message_size(c, 1 << 20));
    OK(plexus_call_options_set_max_send_message_size(c, 1 << 20));
    OK(plexus_call_options_set_metadata(c, NULL));
    EXPECT(plexus_call_options_set_timeout_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_options_set_wait_for_ready(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_options_set_metadata(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_options_set_max_receive_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_options_set_max_send_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_options_new(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    plexus_call_options_free(c);
    plexus_call_options_free(NULL);
}

/* ---- unary ---- */

static void test_unary_and_metadata(void) {
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "x-echo-text", "hello"));
    static const uint8_t bin[] = {0xde, 0xad, 0x00, 0xbe, 0xef};
    OK(plexus_metadata_append_bin(md, "x-echo-data-bin", bin, sizeof bin));
    plexus_call_options *opts = NULL;
    OK(plexus_call_options_new(&opts));
    OK(plexus_call_options_set_metadata(opts, md));
    plexus_metadata_free(md); /* the options keep their own copy */

    plexus_bytes *req = request_text("ping"), *resp = NULL;
    plexus_status *status = NULL;
    OK(plexus_unary(channel, UNARY, req, opts, LONG_MS, &resp, &status));
    CHECK(response_is(resp, "ping"));
    CHECK(status_code(status) == 0);
    const char *message = NULL;
    size_t len = 99;
    OK(plexus_status_message(status, &message, &len));
    CHECK(len == 0 && message[0] == '\0');
    OK(plexus_status_message(status, &message, NULL));

    /* The server echoes x-echo-* keys in its initial metadata... */
    const plexus_metadata *initial = NULL;
    OK(plexus_status_initial_metadata(status, &initial));
    const uint8_t *value = NULL;
    OK(plexus_metadata_get(initial, "x-echo-text", &value, &len));
    CHECK(len == 5 && memcmp(value, "hello", 5) == 0);
    OK(plexus_metadata_get(initial, "x-echo-data-bin", &value, &len));
    CHECK(len == sizeof bin && memcmp(value, bin, len) == 0);
    /* ...and sends fixed trailers. */
    const plexus_metadata *trailers = NULL;
    OK(plexus_status_trailing_metadata(status, &trailers));
    OK(plexus_metadata_get(trailers, "x-trailer", &value, &len));
    CHECK(len == 4 && memcmp(value, "done", 4) == 0);
    OK(plexus_metadata_get(trailers, "x-trailer-bin", &value, &len));
    CHECK(len == 3 && value[0] == 0xfe && value[1] == 0 && value[2] == 1);
    plexus_status_free(status);
    plexus_bytes_free(resp);

    /* The status is optional. */
    OK(plexus_unary(channel, UNARY, req, NULL, LONG_MS, &resp, NULL));
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_call_options_free(opts);
    plexus_status_free(NULL);
}

static void test_unary_error_status(void) {
    echo_request r = {0};
    r.status_code = 9;
    r.status_message = "not now \xe2\x9c\x8b";
    plexus_bytes *req = encode_request(&r), *resp = NULL;
    plexus_status *status = NULL;
    EXPECT(plexus_unary(channel, UNARY, req, NULL, LONG_MS, &resp, &status), PLEXUS_ERR_RPC);
    CHECK(resp == NULL);
    CHECK(strstr(plexus_last_error(), "FAILED_PRECONDITION") != NULL);
    CHECK(status_code(status) == 9);
    const char *message = NULL;
    size_t len = 0;
    OK(plexus_status_message(status, &message, &len));
    CHECK(strcmp(message, "not now \xe2\x9c\x8b") == 0 && len == strlen(message));
    const uint8_t *details = NULL;
    OK(plexus_status_details(status, &details, &len));
    const char *want = "details:not now \xe2\x9c\x8b";
    CHECK(len == strlen(want) && memcmp(details, want, len) == 0);
    const plexus_metadata *trailers = NULL;
    OK(plexus_status_trailing_metadata(status, &trailers));
    const uint8_t *value = NULL;
    OK(plexus_metadata_get(trailers, "x-trailer", &value, &len));
    CHECK(len == 4);
    plexus_status_free(status);
    plexus_bytes_free(req);

    /* An unknown method: UNIMPLEMENTED. */
    req = request_text("x");
    EXPECT(plexus_unary(channel, "/plexus.peer.Echo/Nope", req, NULL, LONG_MS, &resp, &status),
           PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 12);
    plexus_status_free(status);
    plexus_bytes_free(req);
}

static void test_deadline_and_timeout(void) {
    echo_request r = {0};
    r.message = "slow";
    r.delay_ms = 20000;
    plexus_bytes *req = encode_request(&r), *resp = NULL;
    plexus_status *status = NULL;

    /* The call's deadline: DEADLINE_EXCEEDED, and the server sees it too. */
    plexus_call_options *opts = NULL;
    OK(plexus_call_options_new(&opts));
    OK(plexus_call_options_set_timeout_ms(opts, 200));
    EXPECT(plexus_unary(channel, UNARY, req, opts, LONG_MS, &resp, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 4);
    plexus_status_free(status);
    status = NULL;

    /* The blocking wait's own timeout: PLEXUS_ERR_TIMEOUT, the call is cancelled, and no
     * output is written. */
    EXPECT(plexus_unary(channel, UNARY, req, NULL, 200, &resp, &status), PLEXUS_ERR_TIMEOUT);
    CHECK(status == NULL && resp == NULL);

    /* Streams honour the deadline too. */
    const plexus_call *call = NULL;
    r.count = 3;
    r.delay_ms = 20000;
    plexus_bytes *sreq = encode_request(&r);
    OK(plexus_call_start_server_streaming(channel, SERVER_STREAM, sreq, opts, LONG_MS, &call, NULL));
    plexus_bytes *msg = NULL;
    OK(plexus_call_recv(call, LONG_MS, &msg)); /* the first comes at once */
    plexus_bytes_free(msg);
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    EXPECT(plexus_call_finish(call, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 4);
    plexus_status_free(status);
    plexus_call_free(call);
    plexus_bytes_free(sreq);
    plexus_bytes_free(req);
    plexus_call_options_free(opts);
}

/* ---- streams ---- */

static void test_server_streaming(void) {
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "x-echo-who", "c"));
    plexus_call_options *opts = NULL;
    OK(plexus_call_options_new(&opts));
    OK(plexus_call_options_set_metadata(opts, md));
    plexus_metadata_free(md);
    echo_request r = {0};
    r.message = "tick";
    r.count = 5;
    plexus_bytes *req = encode_request(&r);
    const plexus_call *call = NULL;
    OK(plexus_call_start_server_streaming(channel, SERVER_STREAM, req, opts, LONG_MS, &call, NULL));
    plexus_bytes_free(req);

    plexus_metadata *initial = NULL;
    OK(plexus_call_initial_metadata(call, LONG_MS, &initial));
    const uint8_t *value = NULL;
    size_t len = 0;
    OK(plexus_metadata_get(initial, "x-echo-who", &value, &len));
    CHECK(len == 1 && value[0] == 'c');
    plexus_metadata_free(initial);

    for (int i = 0; i < 5; i++) {
        plexus_bytes *msg = NULL;
        OK(plexus_call_recv(call, LONG_MS, &msg));
        echo_response resp = decode_response(msg);
        CHECK(resp.index == i && resp.message_len == 4);
        plexus_bytes_free(msg);
    }
    plexus_bytes *msg = NULL;
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    /* A server-streaming call has no request stream to write to. */
    req = request_text("more");
    EXPECT(plexus_call_send(call, req, LONG_MS), PLEXUS_ERR_WRONG_STATE);
    OK(plexus_call_close_send(call, LONG_MS));
    plexus_status *status = NULL;
    OK(plexus_call_finish(call, LONG_MS, &status));
    CHECK(status_code(status) == 0);
    const plexus_metadata *trailers = NULL;
    OK(plexus_status_trailing_metadata(status, &trailers));
    OK(plexus_metadata_get(trailers, "x-trailer", &value, &len));
    CHECK(len == 4);
    const plexus_metadata *again = NULL;
    OK(plexus_status_initial_metadata(status, &again));
    OK(plexus_metadata_get(again, "x-echo-who", &value, &len));
    CHECK(len == 1);
    plexus_status_free(status);
    plexus_call_free(call);
    plexus_bytes_free(req);
    plexus_call_options_free(opts);
}

static void test_server_streaming_error(void) {
    echo_request r = {0};
    r.message = "x";
    r.count = 2;
    r.status_code = 5;
    r.status_message = "gone";
    plexus_bytes *req = encode_request(&r);
    const plexus_call *call = NULL;
    OK(plexus_call_start_server_streaming(channel, SERVER_STREAM, req, NULL, LONG_MS, &call, NULL));
    plexus_bytes *msg = NULL;
    for (int i = 0; i < 2; i++) {
        OK(plexus_call_recv(call, LONG_MS, &msg));
        plexus_bytes_free(msg);
    }
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    plexus_status *status = NULL;
    EXPECT(plexus_call_finish(call, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 5);
    const uint8_t *details = NULL;
    size_t len = 0;
    OK(plexus_status_details(status, &details, &len));
    CHECK(len == strlen("details:gone") && memcmp(details, "details:gone", len) == 0);
    plexus_status_free(status);
    plexus_call_free(call);
    plexus_bytes_free(req);
}

static void test_client_streaming(void) {
    const plexus_call *call = NULL;
    OK(plexus_call_start(channel, CLIENT_STREAM, NULL, LONG_MS, &call, NULL));
    const char *words[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        plexus_bytes *req = request_text(words[i]);
        OK(plexus_call_send(call, req, LONG_MS));
        plexus_bytes_free(req);
    }
    OK(plexus_call_close_send(call, LONG_MS));
    OK(plexus_call_close_send(call, LONG_MS)); /* idempotent */
    plexus_bytes *req = request_text("late");
    EXPECT(plexus_call_send(call, req, LONG_MS), PLEXUS_ERR_WRONG_STATE);
    plexus_bytes_free(req);
    plexus_bytes *msg = NULL;
    OK(plexus_call_recv(call, LONG_MS, &msg));
    echo_response resp = decode_response(msg);
    CHECK(resp.index == 3 && resp.message_len == 5 && memcmp(resp.message, "a,b,c", 5) == 0);
    plexus_bytes_free(msg);
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    plexus_status *status = NULL;
    OK(plexus_call_finish(call, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(call);
}

static void test_bidi_and_recv_timeout(void) {
    const plexus_call *call = NULL;
    OK(plexus_call_start(channel, BIDI, NULL, LONG_MS, &call, NULL));
    plexus_bytes *msg = NULL;
    /* Nothing sent yet: the receive times out and the call goes on. */
    EXPECT(plexus_call_recv(call, 50, &msg), PLEXUS_ERR_TIMEOUT);
    EXPECT(plexus_call_recv(call, 0, &msg), PLEXUS_ERR_TIMEOUT);
    for (int i = 0; i < 10; i++) {
        char text[16];
        snprintf(text, sizeof text, "m%d", i);
        plexus_bytes *req = request_text(text);
        OK(plexus_call_send(call, req, LONG_MS));
        plexus_bytes_free(req);
        OK(plexus_call_recv(call, LONG_MS, &msg));
        CHECK(response_is(msg, text));
        CHECK(decode_response(msg).index == i);
        plexus_bytes_free(msg);
    }
    OK(plexus_call_close_send(call, LONG_MS));
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    plexus_status *status = NULL;
    OK(plexus_call_finish(call, LONG_MS, &status));
    CHECK(status_code(status) == 0);
    plexus_status_free(status);
    /* finish again gives the same status */
    OK(plexus_call_finish(call, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(call);
}

static void *cancel_later(void *arg) {
    sleep_ms(100);
    OK(plexus_call_cancel((const plexus_call *)arg));
    return NULL;
}

static void test_cancel(void) {
    /* A receive blocked on a slow stream ends when another thread cancels. */
    echo_request r = {0};
    r.message = "slow";
    r.count = 100;
    r.delay_ms = 60000;
    plexus_bytes *req = encode_request(&r);
    const plexus_call *call = NULL;
    OK(plexus_call_start_server_streaming(channel, SERVER_STREAM, req, NULL, LONG_MS, &call, NULL));
    plexus_bytes_free(req);
    plexus_bytes *msg = NULL;
    OK(plexus_call_recv(call, LONG_MS, &msg));
    plexus_bytes_free(msg);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, cancel_later, (void *)call) == 0);
    EXPECT(plexus_call_recv(call, LONG_MS, &msg), PLEXUS_END_OF_STREAM);
    CHECK(pthread_join(t, NULL) == 0);
    plexus_status *status = NULL;
    EXPECT(plexus_call_finish(call, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 1);
    plexus_status_free(status);
    OK(plexus_call_cancel(call)); /* idempotent */
    plexus_call_free(call);

    /* Cancel before anything else: sends fail, finish says CANCELLED. */
    OK(plexus_call_start(channel, BIDI, NULL, LONG_MS, &call, NULL));
    OK(plexus_call_cancel(call));
    req = request_text("after");
    EXPECT(plexus_call_send(call, req, LONG_MS), PLEXUS_ERR_RPC);
    plexus_bytes_free(req);
    EXPECT(plexus_call_finish(call, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 1);
    plexus_status_free(status);
    plexus_call_free(call);

    /* Freeing a call that is still open cancels it. */
    OK(plexus_call_start(channel, BIDI, NULL, LONG_MS, &call, NULL));
    plexus_call_free(call);
    plexus_call_free(NULL);
}

/* ---- completion queue ---- */

static plexus_event next_event(const plexus_cq *cq) {
    plexus_event ev;
    memset(&ev, 0, sizeof ev);
    OK(plexus_cq_next(cq, LONG_MS, &ev));
    return ev;
}

static void test_cq_unary(void) {
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));
    plexus_event ev;
    EXPECT(plexus_cq_next(cq, 0, &ev), PLEXUS_ERR_TIMEOUT);
    EXPECT(plexus_cq_next(cq, 20, &ev), PLEXUS_ERR_TIMEOUT);
    enum { N = 50 };
    int seen[N] = {0};
    for (intptr_t i = 0; i < N; i++) {
        char text[16];
        snprintf(text, sizeof text, "async%d", (int)i);
        plexus_bytes *req = request_text(text);
        OK(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)i));
        plexus_bytes_free(req); /* borrowed only for the call to plexus_unary_async */
    }
    for (int n = 0; n < N; n++) {
        ev = next_event(cq);
        CHECK(ev.op == PLEXUS_OP_UNARY && ev.result == PLEXUS_OK);
        intptr_t i = (intptr_t)ev.tag;
        CHECK(i >= 0 && i < N && !seen[i]);
        seen[i] = 1;
        char text[16];
        snprintf(text, sizeof text, "async%d", (int)i);
        CHECK(response_is(ev.message, text));
        CHECK(status_code(ev.status) == 0);
        plexus_bytes_free(ev.message);
        plexus_status_free(ev.status);
    }
    /* A failing call reports its status in the event. */
    echo_request r = {0};
    r.status_code = 7;
    r.status_message = "no";
    plexus_bytes *req = encode_request(&r);
    OK(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)7));
    plexus_bytes_free(req);
    ev = next_event(cq);
    CHECK(ev.tag == (void *)7 && ev.result == PLEXUS_ERR_RPC && ev.message == NULL);
    CHECK(status_code(ev.status) == 7);
    plexus_status_free(ev.status);

    /* Shut down with an operation in flight: it still completes, then SHUTDOWN. */
    r.status_code = 0;
    r.delay_ms = 100;
    req = encode_request(&r);
    OK(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)8));
    OK(plexus_cq_shutdown(cq));
    OK(plexus_cq_shutdown(cq));
    EXPECT(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)9), PLEXUS_ERR_SHUTDOWN);
    plexus_bytes_free(req);
    ev = next_event(cq);
    CHECK(ev.tag == (void *)8 && ev.result == PLEXUS_OK);
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    EXPECT(plexus_cq_next(cq, LONG_MS, &ev), PLEXUS_ERR_SHUTDOWN);
    EXPECT(plexus_cq_next(cq, 0, &ev), PLEXUS_ERR_SHUTDOWN);
    plexus_cq_free(cq);
    plexus_cq_free(NULL);
}

/* plexus_unary_call_async: plexus_unary_async's event, plus a handle that cancels the call. */
static void test_cq_unary_cancel(void) {
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));
    plexus_bytes *req = request_text("handle");
    const plexus_call *call = NULL;
    OK(plexus_unary_call_async(channel, UNARY, req, NULL, cq, (void *)1, &call));
    CHECK(call != NULL);
    plexus_event ev = next_event(cq);
    CHECK(ev.tag == (void *)1 && ev.op == PLEXUS_OP_UNARY && ev.result == PLEXUS_OK);
    CHECK(response_is(ev.message, "handle") && status_code(ev.status) == 0);
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    /* The handle only cancels and frees: no request side, no response side. */
    EXPECT(plexus_call_send(call, req, 0), PLEXUS_ERR_WRONG_STATE);
    plexus_bytes *msg = NULL;
    EXPECT(plexus_call_recv(call, 0, &msg), PLEXUS_ERR_BUSY);
    OK(plexus_call_cancel(call)); /* after the end: nothing to cancel */
    plexus_call_free(call);
    plexus_bytes_free(req);

    /* Cancelled while the server naps: the event comes at once, with CANCELLED. */
    echo_request r = {0};
    r.delay_ms = LONG_MS;
    req = encode_request(&r);
    OK(plexus_unary_call_async(channel, UNARY, req, NULL, cq, (void *)2, &call));
    OK(plexus_call_cancel(call));
    ev = next_event(cq);
    CHECK(ev.tag == (void *)2 && ev.result == PLEXUS_ERR_RPC && ev.message == NULL);
    CHECK(status_code(ev.status) == 1);
    plexus_status_free(ev.status);
    plexus_call_free(call);
    /* Freeing the handle before the event cancels the call too. */
    OK(plexus_unary_call_async(channel, UNARY, req, NULL, cq, (void *)3, &call));
    plexus_call_free(call);
    ev = next_event(cq);
    CHECK(ev.tag == (void *)3 && ev.result == PLEXUS_ERR_RPC && status_code(ev.status) == 1);
    plexus_status_free(ev.status);
    /* No handle to write: an error, and no event. */
    EXPECT(plexus_unary_call_async(channel, UNARY, req, NULL, cq, (void *)4, NULL),
           PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_next(cq, 50, &ev), PLEXUS_ERR_TIMEOUT);
    plexus_bytes_free(req);
    plexus_cq_free(cq);
}

static void test_cq_streams(void) {
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));
    plexus_event ev;

    /* Bidi, every operation asynchronous. */
    OK(plexus_call_start_async(channel, BIDI, NULL, cq, (void *)1));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_OK && ev.call != NULL);
    const plexus_call *call = ev.call;
    OK(plexus_call_initial_metadata_async(call, cq, (void *)2));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_INITIAL_METADATA && ev.tag == (void *)2 && ev.result == PLEXUS_OK);
    CHECK(ev.metadata != NULL);
    plexus_metadata_free(ev.metadata);
    /* Nothing sent yet, so this receive stays pending; a second one is refused. */
    OK(plexus_call_recv_async(call, cq, (void *)4));
    EXPECT(plexus_call_recv_async(call, cq, (void *)99), PLEXUS_ERR_BUSY);
    plexus_bytes *none = NULL;
    EXPECT(plexus_call_recv(call, 0, &none), PLEXUS_ERR_BUSY);
    EXPECT(plexus_call_finish_async(call, cq, (void *)99), PLEXUS_ERR_BUSY);
    plexus_bytes *req = request_text("one");
    OK(plexus_call_send_async(call, req, cq, (void *)3));
    plexus_bytes_free(req);
    int got_send = 0, got_recv = 0;
    for (int i = 0; i < 2; i++) {
        ev = next_event(cq);
        if (ev.op == PLEXUS_OP_SEND) {
            CHECK(ev.tag == (void *)3 && ev.result == PLEXUS_OK);
            got_send = 1;
        } else {
            CHECK(ev.op == PLEXUS_OP_RECV && ev.tag == (void *)4 && ev.result == PLEXUS_OK);
            CHECK(response_is(ev.message, "one"));
            plexus_bytes_free(ev.message);
            got_recv = 1;
        }
    }
    CHECK(got_send && got_recv);
    OK(plexus_call_close_send_async(call, cq, (void *)5));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_CLOSE_SEND && ev.result == PLEXUS_OK);
    req = request_text("late");
    EXPECT(plexus_call_send_async(call, req, cq, (void *)6), PLEXUS_ERR_WRONG_STATE);
    plexus_bytes_free(req);
    OK(plexus_call_recv_async(call, cq, (void *)7));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_END_OF_STREAM && ev.message == NULL);
    OK(plexus_call_finish_async(call, cq, (void *)8));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_FINISH && ev.result == PLEXUS_OK && status_code(ev.status) == 0);
    plexus_status_free(ev.status);
    plexus_call_free(call);

    /* Server streaming, started asynchronously; cancelled with a receive pending. */
    echo_request r = {0};
    r.message = "s";
    r.count = 100;
    r.delay_ms = 60000;
    req = encode_request(&r);
    OK(plexus_call_start_server_streaming_async(channel, SERVER_STREAM, req, NULL, cq, (void *)10));
    plexus_bytes_free(req);
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_OK);
    call = ev.call;
    OK(plexus_call_recv_async(call, cq, (void *)11));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_OK);
    plexus_bytes_free(ev.message);
    OK(plexus_call_recv_async(call, cq, (void *)12)); /* waits a minute for the next one */
    OK(plexus_call_cancel(call));
    ev = next_event(cq);
    CHECK(ev.tag == (void *)12 && ev.result == PLEXUS_END_OF_STREAM);
    OK(plexus_call_finish_async(call, cq, (void *)13));
    ev = next_event(cq);
    CHECK(ev.result == PLEXUS_ERR_RPC && status_code(ev.status) == 1);
    plexus_status_free(ev.status);
    plexus_call_free(call);

    /* A start that fails reports the status. */
    const plexus_channel *dead = NULL;
    OK(plexus_channel_new("127.0.0.1:1", NULL, &dead));
    OK(plexus_call_start_async(dead, BIDI, NULL, cq, (void *)20));
    ev = next_event(cq);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_ERR_RPC && ev.call == NULL);
    CHECK(status_code(ev.status) == 14);
    plexus_status_free(ev.status);
    plexus_channel_free(dead);

    /* A freed queue with events still in it frees them. */
    req = request_text("left behind");
    OK(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)30));
    plexus_bytes_free(req);
    plexus_cq_free(cq);
}

/* An event loop driven by plexus_cq_fd: 200 calls in flight, epoll waits on the eventfd,
 * plexus_cq_next(0) drains; the fd is readable only while events wait. */
static void test_epoll_loop(void) {
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));
    int fd = -1;
    OK(plexus_cq_fd(cq, &fd));
    CHECK(fd >= 0);
    int again = -1;
    OK(plexus_cq_fd(cq, &again));
    CHECK(again == fd);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event want = {0};
    want.events = EPOLLIN;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &want) == 0);
    struct epoll_event got;
    CHECK(epoll_wait(ep, &got, 1, 0) == 0); /* nothing yet */

    enum { N = 200 };
    plexus_bytes *req = request_text("loop");
    for (intptr_t i = 0; i < N; i++) OK(plexus_unary_async(channel, UNARY, req, NULL, cq, (void *)i));
    plexus_bytes_free(req);
    int done = 0, wakeups = 0;
    while (done < N) {
        int n = epoll_wait(ep, &got, 1, LONG_MS);
        CHECK(n == 1 && (got.events & EPOLLIN));
        wakeups++;
        for (;;) {
            plexus_event ev;
            int32_t rc = plexus_cq_next(cq, 0, &ev);
            if (rc == PLEXUS_ERR_TIMEOUT) break;
            OK(rc);
            CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "loop"));
            plexus_bytes_free(ev.message);
            plexus_status_free(ev.status);
            done++;
        }
    }
    CHECK(epoll_wait(ep, &got, 1, 0) == 0); /* drained: not readable */
    CHECK(wakeups >= 1 && wakeups <= N);

    /* A shut-down, drained queue stays readable so the loop sees the end. */
    OK(plexus_cq_shutdown(cq));
    CHECK(epoll_wait(ep, &got, 1, LONG_MS) == 1);
    plexus_event ev;
    EXPECT(plexus_cq_next(cq, 0, &ev), PLEXUS_ERR_SHUTDOWN);
    close(ep);
    plexus_cq_free(cq);
}

/* ---- channels ---- */

static void unary_n(const plexus_channel *ch, int n) {
    plexus_bytes *req = request_text("count");
    for (int i = 0; i < n; i++) {
        plexus_bytes *resp = NULL;
        OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL));
        plexus_bytes_free(resp);
    }
    plexus_bytes_free(req);
}

/* The connectivity state through the completion queue, and a connection started with a zero
 * timeout before the target is even resolved: it goes on in the background, and the watches
 * follow it to READY with no other call. */
static void test_watch_state(void) {
    const char *t = test_target();
    if (strncmp(t, "http://", 7) == 0) t += 7;
    char target[256];
    snprintf(target, sizeof target, "dns:///localhost%s", strrchr(t, ':'));
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_shared(o, false));
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(target, o, &ch));
    plexus_channel_options_free(o);
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));
    plexus_event ev;

    EXPECT(plexus_channel_watch_state_async(ch, 99, -1, cq, NULL), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_watch_state_async(NULL, 0, -1, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_watch_state_async(ch, 0, -1, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    /* IDLE, and nothing asks for a connection: the watch waits. */
    OK(plexus_channel_watch_state_async(ch, PLEXUS_STATE_IDLE, -1, cq, (void *)1));
    EXPECT(plexus_cq_next(cq, 0, &ev), PLEXUS_ERR_TIMEOUT);

    plexus_result r = plexus_channel_connect(ch, 0);
    CHECK(r == PLEXUS_ERR_TIMEOUT || r == PLEXUS_OK);
    plexus_connectivity_state seen = PLEXUS_STATE_IDLE;
    for (int i = 0; seen != PLEXUS_STATE_READY; i++) {
        CHECK(i < 10);
        ev = next_event(cq);
        CHECK(ev.op == PLEXUS_OP_STATE_CHANGE && ev.result == PLEXUS_OK);
        CHECK(ev.tag == (void *)1 && ev.state != seen);
        CHECK(ev.state == PLEXUS_STATE_CONNECTING || ev.state == PLEXUS_STATE_READY);
        seen = ev.state;
        if (seen != PLEXUS_STATE_READY) {
            OK(plexus_channel_watch_state_async(ch, seen, -1, cq, (void *)1));
        }
    }
    /* A state other than the current one reports the current one at once. */
    OK(plexus_channel_watch_state_async(ch, PLEXUS_STATE_IDLE, -1, cq, (void *)2));
    ev = next_event(cq);
    CHECK(ev.tag == (void *)2 && ev.result == PLEXUS_OK && ev.state == PLEXUS_STATE_READY);
    /* No change within the timeout: PLEXUS_ERR_TIMEOUT with the state then. */
    OK(plexus_channel_watch_state_async(ch, PLEXUS_STATE_READY, 20, cq, (void *)3));
    ev = next_event(cq);
    CHECK(ev.tag == (void *)3 && ev.op == PLEXUS_OP_STATE_CHANGE);
    CHECK(ev.result == PLEXUS_ERR_TIMEOUT && ev.state == PLEXUS_STATE_READY);
    CHECK(ev.call == NULL && ev.message == NULL && ev.status == NULL && ev.metadata == NULL);

    OK(plexus_cq_shutdown(cq));
    EXPECT(plexus_channel_watch_state_async(ch, PLEXUS_STATE_READY, -1, cq, NULL),
           PLEXUS_ERR_SHUTDOWN);
    EXPECT(plexus_cq_next(cq, LONG_MS, &ev), PLEXUS_ERR_SHUTDOWN);
    plexus_cq_free(cq);
    plexus_channel_free(ch);
}

/* Two channels created independently for one target share one connection; a channel that
 * opts out gets its own. */
static void test_shared_channels(void) {
    /* A target of their own, so other tests' calls do not count. */
    char target[256];
    snprintf(target, sizeof target, "ipv4:%s", strchr(test_target(), ':') ? test_target() : "");
    const char *t = test_target();
    if (strncmp(t, "http://", 7) == 0) t += 7;
    snprintf(target, sizeof target, "dns:///%s", t);

    const plexus_channel *a = NULL, *b = NULL, *own = NULL;
    OK(plexus_channel_new(target, NULL, &a));
    plexus_channel_stats s;
    OK(plexus_channel_get_stats(a, &s));
    CHECK(s.calls_started == 0 && s.connections == 0);
    plexus_connectivity_state state;
    OK(plexus_channel_state(a, &state));
    CHECK(state == PLEXUS_STATE_IDLE);
    OK(plexus_channel_connect(a, LONG_MS));
    OK(plexus_channel_state(a, &state));
    CHECK(state == PLEXUS_STATE_READY);

    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_new(target, o, &b)); /* equal (default) options: shared */
    OK(plexus_channel_options_set_shared(o, false));
    OK(plexus_channel_new(target, o, &own));
    plexus_channel_options_free(o);

    unary_n(a, 5);
    unary_n(b, 7);
    unary_n(own, 3);
    plexus_channel_stats sa, sb, so;
    OK(plexus_channel_get_stats(a, &sa));
    OK(plexus_channel_get_stats(b, &sb));
    OK(plexus_channel_get_stats(own, &so));
    CHECK(sa.calls_started == 12 && sb.calls_started == 12 && sa.calls_succeeded == 12);
    CHECK(sa.connections == 1 && sb.connections == 1 && sa.endpoints == 1);
    CHECK(so.calls_started == 3 && so.connections == 1);
    CHECK(sa.state == PLEXUS_STATE_READY && sa.active_streams == 0);

    /* Freeing one sharer leaves the other working. */
    plexus_channel_free(a);
    unary_n(b, 1);
    OK(plexus_channel_get_stats(b, &sb));
    CHECK(sb.calls_started == 13 && sb.connections == 1);
    plexus_channel_free(b);
    plexus_channel_free(own);
    plexus_channel_free(NULL);

    /* Nothing listens on port 1: connect fails (or times out on a strange network). */
    const plexus_channel *dead = NULL;
    OK(plexus_channel_new("127.0.0.1:1", NULL, &dead));
    int32_t rc = plexus_channel_connect(dead, LONG_MS);
    CHECK(rc == PLEXUS_ERR_RPC || rc == PLEXUS_ERR_TIMEOUT);
    plexus_bytes *req = request_text("x"), *resp = NULL;
    plexus_status *status = NULL;
    EXPECT(plexus_unary(dead, UNARY, req, NULL, LONG_MS, &resp, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 14);
    plexus_status_free(status);
    plexus_bytes_free(req);
    plexus_channel_free(dead);
}

/* ---- compression and TLS ---- */

static void test_compression(void) {
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_compression(o, "gzip"));
    EXPECT(plexus_channel_options_set_compression(o, "brotli"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_compression(o, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(test_target(), o, &ch));
    plexus_channel_options_free(o);
    /* A compressible payload, sent gzip by the channel, deflate by one call's options. */
    uint8_t payload[8192];
    memset(payload, 'z', sizeof payload);
    echo_request r = {0};
    r.payload = payload;
    r.payload_len = sizeof payload;
    plexus_bytes *req = encode_request(&r), *resp = NULL;
    OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL));
    CHECK(decode_response(resp).payload_len == sizeof payload);
    plexus_bytes_free(resp);
    plexus_call_options *c = NULL;
    OK(plexus_call_options_new(&c));
    OK(plexus_call_options_set_compression(c, "deflate"));
    EXPECT(plexus_call_options_set_compression(c, "zip"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_call_options_set_compression(NULL, "gzip"), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_unary(ch, UNARY, req, c, LONG_MS, &resp, NULL));
    CHECK(decode_response(resp).payload_len == sizeof payload);
    plexus_bytes_free(resp);
    plexus_call_options_free(c);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
}

/* Reads `dir`/`name` into a new buffer (free it), its length into `*len`. */
static uint8_t *read_file(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    uint8_t *buf = malloc(1 << 16);
    CHECK(buf != NULL);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    CHECK(*len > 0);
    return buf;
}

/* Unary through a TLS channel with these options; returns the result. */
static int32_t tls_unary(plexus_channel_options *o, int32_t *code) {
    const char *target = getenv("PLEXUS_TEST_TLS_TARGET");
    CHECK(target != NULL);
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(target, o, &ch));
    plexus_bytes *req = request_text("secret"), *resp = NULL;
    plexus_status *status = NULL;
    int32_t rc = plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, &status);
    if (rc == PLEXUS_OK) CHECK(response_is(resp, "secret"));
    *code = status != NULL ? status_code(status) : -1;
    plexus_status_free(status);
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
    return rc;
}

/* The TLS server (scripts/test-c.sh) requires a client certificate from its CA. */
static void test_tls(void) {
    const char *certs = getenv("PLEXUS_TEST_CERTS");
    CHECK(certs != NULL);
    size_t ca_len, other_len, cert_len, key_len;
    uint8_t *ca = read_file(certs, "ca.pem", &ca_len);
    uint8_t *other = read_file(certs, "other-ca.pem", &other_len);
    uint8_t *cert = read_file(certs, "client.pem", &cert_len);
    uint8_t *key = read_file(certs, "client.key", &key_len);
    int32_t code = 0;

    /* Mutual TLS: trusted CA, the certificate's name, a client certificate. */
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_add_tls_ca_pem(o, ca, ca_len));
    OK(plexus_channel_options_set_tls_native_roots(o, false));
    OK(plexus_channel_options_set_tls_server_name(o, "localhost"));
    OK(plexus_channel_options_set_tls_identity_pem(o, cert, cert_len, key, key_len));
    EXPECT(tls_unary(o, &code), PLEXUS_OK);
    CHECK(code == 0);
    plexus_channel_options_free(o);

    /* No client certificate: the server refuses the connection. */
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_add_tls_ca_pem(o, ca, ca_len));
    OK(plexus_channel_options_set_tls_server_name(o, "localhost"));
    EXPECT(tls_unary(o, &code), PLEXUS_ERR_RPC);
    CHECK(code == 14);
    plexus_channel_options_free(o);

    /* A CA that did not sign the server's certificate: the client refuses it. */
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_add_tls_ca_pem(o, other, other_len));
    OK(plexus_channel_options_set_tls_server_name(o, "localhost"));
    OK(plexus_channel_options_set_tls_identity_pem(o, cert, cert_len, key, key_len));
    EXPECT(tls_unary(o, &code), PLEXUS_ERR_RPC);
    CHECK(code == 14);

    /* Bad arguments, and TLS with an http:// target. */
    EXPECT(plexus_channel_options_add_tls_ca_pem(o, NULL, 3), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_add_tls_ca_pem(o, ca, 0), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls_server_name(o, ""), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls_server_name(o, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls_identity_pem(o, cert, 0, key, key_len),
           PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls_identity_pem(o, NULL, 5, key, key_len),
           PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls_native_roots(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_options_set_tls(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    const plexus_channel *ch = NULL;
    EXPECT(plexus_channel_new("http://127.0.0.1:1", o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    /* Turning TLS off forgets its settings: plain text to the plain server works. */
    OK(plexus_channel_options_set_tls(o, false));
    OK(plexus_channel_new(test_target(), o, &ch));
    plexus_bytes *req = request_text("plain"), *resp = NULL;
    OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL));
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
    /* TLS on with only the defaults (system roots) is a valid setting. */
    OK(plexus_channel_options_set_tls(o, true));
    OK(plexus_channel_new("127.0.0.1:1", o, &ch));
    plexus_channel_free(ch);
    plexus_channel_options_free(o);
    free(ca);
    free(other);
    free(cert);
    free(key);
}

/* ---- bad arguments: an error code and text for each kind, never a crash ---- */

/* Call hooks: the start hook adds an x-echo-* entry (the server echoes it) or refuses the
 * call; the end hook counts outcomes. */
struct hook_state {
    atomic_int started;
    atomic_int ended_ok;
    atomic_int ended_denied;
    atomic_int refuse;
};

static int32_t start_hook(void *user_data, const char *method, plexus_metadata *md) {
    struct hook_state *state = user_data;
    atomic_fetch_add(&state->started, 1);
    if (strcmp(method, UNARY) != 0) return 13; /* INTERNAL: a method we did not call */
    if (atomic_load(&state->refuse)) return 7; /* PERMISSION_DENIED */
    return plexus_metadata_append(md, "x-echo-hook", "added") == PLEXUS_OK ? 0 : 13;
}

static void end_hook(void *user_data, const char *method, int32_t code, const char *message) {
    struct hook_state *state = user_data;
    (void)method;
    if (code == 0) atomic_fetch_add(&state->ended_ok, 1);
    if (code == 7 && strstr(message, "start hook") != NULL) atomic_fetch_add(&state->ended_denied, 1);
}

static void test_call_hooks(void) {
    static struct hook_state state;
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_call_hooks(o, start_hook, end_hook, &state));
    EXPECT(plexus_channel_options_set_call_hooks(NULL, start_hook, end_hook, &state),
           PLEXUS_ERR_NULL_ARGUMENT);
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(test_target(), o, &ch));
    plexus_channel_options_free(o);

    plexus_bytes *req = request_text("hooked"), *resp = NULL;
    plexus_status *status = NULL;
    OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, &status));
    plexus_bytes_free(req);
    CHECK(response_is(resp, "hooked"));
    const plexus_metadata *initial = NULL;
    OK(plexus_status_initial_metadata(status, &initial));
    const uint8_t *value = NULL;
    size_t len = 0;
    OK(plexus_metadata_get(initial, "x-echo-hook", &value, &len));
    CHECK(len == 5 && memcmp(value, "added", 5) == 0);
    plexus_status_free(status);
    plexus_bytes_free(resp);

    atomic_store(&state.refuse, 1);
    req = request_text("refused");
    resp = NULL;
    status = NULL;
    EXPECT(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, &status), PLEXUS_ERR_RPC);
    plexus_bytes_free(req);
    CHECK(status_code(status) == 7);
    plexus_status_free(status);
    CHECK(atomic_load(&state.started) == 2);
    CHECK(atomic_load(&state.ended_ok) == 1);
    CHECK(atomic_load(&state.ended_denied) == 1);
    plexus_channel_free(ch);
}

static void test_bad_arguments(void) {
    plexus_bytes *req = request_text("x"), *resp = NULL;
    plexus_status *status = NULL;
    const plexus_call *call = NULL;
    const plexus_channel *ch = NULL;
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));

    /* NULL handles and outputs. */
    EXPECT(plexus_channel_new(NULL, NULL, &ch), PLEXUS_ERR_NULL_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "plexus_channel_new: target must not be NULL") != NULL);
    EXPECT(plexus_channel_new(test_target(), NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary(NULL, UNARY, req, NULL, 1000, &resp, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary(channel, NULL, req, NULL, 1000, &resp, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary(channel, UNARY, NULL, NULL, 1000, &resp, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary(channel, UNARY, req, NULL, 1000, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary_async(NULL, UNARY, req, NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_unary_async(channel, UNARY, req, NULL, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_start(NULL, BIDI, NULL, 1000, &call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_start(channel, BIDI, NULL, 1000, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_start_server_streaming(channel, SERVER_STREAM, NULL, NULL, 1000, &call, NULL),
           PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_start_async(channel, NULL, NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_start_server_streaming_async(channel, SERVER_STREAM, NULL, NULL, cq, NULL),
           PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_send(NULL, req, 1000), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_recv(NULL, 1000, &resp), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_close_send(NULL, 1000), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_initial_metadata(NULL, 1000, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_finish(NULL, 1000, &status), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_cancel(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_send_async(NULL, req, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_recv_async(NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_close_send_async(NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_initial_metadata_async(NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_call_finish_async(NULL, cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_get_stats(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_get_stats(channel, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_state(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_channel_connect(NULL, 1000), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_new(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_next(NULL, 0, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_next(cq, 0, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_fd(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_fd(cq, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_cq_shutdown(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_status_code(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_status_message(NULL, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_status_details(NULL, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_status_trailing_metadata(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT(plexus_status_initial_metadata(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);

    /* Strings that are not UTF-8. */
    EXPECT(plexus_channel_new("local\xfehost:1", NULL, &ch), PLEXUS_ERR_INVALID_UTF8);
    EXPECT(plexus_unary(channel, "/a\xff/b", req, NULL, 1000, &resp, NULL), PLEXUS_ERR_INVALID_UTF8);
    EXPECT(plexus_call_start(channel, "/\xc0", NULL, 1000, &call, NULL), PLEXUS_ERR_INVALID_UTF8);

    /* Malformed values. */
    EXPECT(plexus_channel_new("", NULL, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_new("ipv4:not-an-address", NULL, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT(plexus_channel_new("unix:", NULL, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    /* A method path without '/': the call fails with INTERNAL, as gRPC says. */
    EXPECT(plexus_unary(channel, "no-slash", req, NULL, 1000, &resp, &status), PLEXUS_ERR_RPC);
    CHECK(status_code(status) == 13);
    plexus_status_free(status);
    /* Out-of-range codes and indexes were covered with their objects above. */

    plexus_bytes_free(req);
    plexus_cq_free(cq);
}

int main(void) {
    int passed = 0;
    OK(plexus_channel_new(test_target(), NULL, &channel));
    /* PLEXUS_TEST_ONLY=name runs one test (for debugging; the suite runs them all). */
    const char *only = getenv("PLEXUS_TEST_ONLY");
#define RUN(t)                                                                             \
    do {                                                                                   \
        if (only != NULL && strcmp(only, #t) != 0) break;                                  \
        t();                                                                               \
        printf("PASS %s\n", #t);                                                           \
        fflush(stdout);                                                                    \
        passed++;                                                                          \
    } while (0)
    RUN(test_names_and_runtime);
    RUN(test_bytes);
    RUN(test_metadata);
    RUN(test_options);
    RUN(test_unary_and_metadata);
    RUN(test_unary_error_status);
    RUN(test_wrapped_large_message);
    RUN(test_deadline_and_timeout);
    RUN(test_server_streaming);
    RUN(test_server_streaming_error);
    RUN(test_client_streaming);
    RUN(test_bidi_and_recv_timeout);
    RUN(test_cancel);
    RUN(test_cq_unary);
    RUN(test_cq_unary_cancel);
    RUN(test_cq_streams);
    RUN(test_watch_state);
    RUN(test_epoll_loop);
    RUN(test_shared_channels);
    RUN(test_compression);
    RUN(test_tls);
    RUN(test_call_hooks);
    RUN(test_bad_arguments);
    plexus_channel_free(channel);
    OK(plexus_shutdown());
    return finish_tests("test_api", passed);
}
