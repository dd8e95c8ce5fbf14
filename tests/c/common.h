/* Shared helpers of the C tests: checks, the echo service's protobuf messages (encoded by
 * hand: tests/peer/proto/echo.proto), and the test server's target.
 *
 * The tests run against the Rust echo server `plexus-peer server` (tests/peer/src), which
 * scripts/test-c.sh starts and names in PLEXUS_TEST_TARGET. */
#ifndef PLEXUS_TEST_COMMON_H
#define PLEXUS_TEST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

#define UNARY "/plexus.peer.Echo/Unary"
#define SERVER_STREAM "/plexus.peer.Echo/ServerStream"
#define CLIENT_STREAM "/plexus.peer.Echo/ClientStream"
#define BIDI "/plexus.peer.Echo/Bidi"

/* Generous limit for anything that should finish quickly on a loaded 2-core machine. */
#define LONG_MS 30000

static int checks_failed = 0;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, plexus_last_error());                                           \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* Checks that `expr` returns `code`. */
#define EXPECT(expr, code)                                                                 \
    do {                                                                                   \
        int32_t got_ = (expr);                                                             \
        if (got_ != (code)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n",       \
                    __FILE__, __LINE__, #expr, plexus_result_name(got_),                   \
                    plexus_result_name(code), plexus_last_error());                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define OK(expr) EXPECT(expr, PLEXUS_OK)

static inline const char *test_target(void) {
    const char *target = getenv("PLEXUS_TEST_TARGET");
    if (target == NULL || target[0] == '\0') {
        fprintf(stderr, "PLEXUS_TEST_TARGET is not set (scripts/test-c.sh sets it)\n");
        exit(2);
    }
    return target;
}

/* ---- protobuf, just enough for EchoRequest and EchoResponse ---- */

typedef struct {
    uint8_t data[1 << 16];
    size_t len;
} pb_buf;

static inline void pb_varint(pb_buf *b, uint64_t v) {
    while (v >= 0x80) {
        b->data[b->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (uint8_t)v;
}

static inline void pb_int(pb_buf *b, uint32_t field, int32_t v) {
    if (v == 0) return;
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, (uint64_t)(int64_t)v);
}

static inline void pb_bytes(pb_buf *b, uint32_t field, const void *p, size_t n) {
    if (n == 0) return;
    CHECK(b->len + n + 16 < sizeof b->data);
    pb_varint(b, ((uint64_t)field << 3) | 2);
    pb_varint(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* The fields of plexus.peer.EchoRequest. */
typedef struct {
    const char *message;
    int32_t count;
    int32_t delay_ms;
    int32_t status_code;
    const char *status_message;
    const void *payload;
    size_t payload_len;
} echo_request;

/* Encodes `r` into `b` (protobuf wire format). */
static inline void encode_raw(const echo_request *r, pb_buf *b) {
    b->len = 0;
    if (r->message) pb_bytes(b, 1, r->message, strlen(r->message));
    pb_int(b, 2, r->count);
    pb_int(b, 3, r->delay_ms);
    pb_int(b, 4, r->status_code);
    if (r->status_message) pb_bytes(b, 5, r->status_message, strlen(r->status_message));
    pb_bytes(b, 6, r->payload, r->payload_len);
}

/* Encodes `r` into a new plexus_bytes (owned by the caller). Thread-safe. */
static inline plexus_bytes *encode_request(const echo_request *r) {
    pb_buf *b = (pb_buf *)malloc(sizeof *b);
    CHECK(b != NULL);
    encode_raw(r, b);
    plexus_bytes *out = NULL;
    OK(plexus_bytes_copy(b->data, b->len, &out));
    free(b);
    return out;
}

/* A request carrying just `message`. */
static inline plexus_bytes *request_text(const char *message) {
    echo_request r;
    memset(&r, 0, sizeof r);
    r.message = message;
    return encode_request(&r);
}

/* The fields of plexus.peer.EchoResponse; pointers borrow from the decoded buffer. */
typedef struct {
    const uint8_t *message;
    size_t message_len;
    int32_t index;
    const uint8_t *payload;
    size_t payload_len;
} echo_response;

static inline uint64_t pb_read_varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    int shift = 0;
    while (*p < end) {
        uint8_t byte = *(*p)++;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return v;
        shift += 7;
        CHECK(shift < 64);
    }
    CHECK(!"truncated varint");
    return 0;
}

/* Decodes a response message from `len` bytes at `p`; pointers borrow from them. */
static inline echo_response decode_raw(const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    echo_response r;
    memset(&r, 0, sizeof r);
    while (p < end) {
        uint64_t key = pb_read_varint(&p, end);
        uint32_t field = (uint32_t)(key >> 3);
        uint32_t wire = (uint32_t)(key & 7);
        if (wire == 0) {
            uint64_t v = pb_read_varint(&p, end);
            if (field == 2) r.index = (int32_t)v;
        } else if (wire == 2) {
            uint64_t n = pb_read_varint(&p, end);
            CHECK(n <= (uint64_t)(end - p));
            if (field == 1) {
                r.message = p;
                r.message_len = (size_t)n;
            } else if (field == 3) {
                r.payload = p;
                r.payload_len = (size_t)n;
            }
            p += n;
        } else {
            CHECK(!"unexpected wire type");
        }
    }
    return r;
}

/* Decodes a response message in place (no copy: the bytes are read where they arrived). */
static inline echo_response decode_response(const plexus_bytes *msg) {
    const uint8_t *p = NULL;
    size_t len = 0;
    OK(plexus_bytes_data(msg, &p, &len));
    return decode_raw(p, len);
}

/* Whether the response's message field equals `text`. */
static inline int response_is(const plexus_bytes *msg, const char *text) {
    echo_response r = decode_response(msg);
    return r.message_len == strlen(text) && memcmp(r.message, text, r.message_len) == 0;
}

/* The status's code. */
static inline int32_t status_code(const plexus_status *status) {
    int32_t code = -1;
    OK(plexus_status_code(status, &code));
    return code;
}

/* Prints the closing line the test runner reads. */
static inline int finish_tests(const char *name, int passed) {
    printf("%s: %d passed, %d failed\n", name, passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

#endif
