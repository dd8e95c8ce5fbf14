/* plexus-bench-c: the benchmark client of the matrix (plexus-bench matrix) through libplexus's
 * C ABI. Same flags and same one-line JSON report as `plexus-bench client`:
 *
 *   plexus-bench-c client --target HOST:PORT --rpc unary|streaming --concurrency N
 *                  --payload BYTES --duration S --warmup S [--json]
 *
 * Every call is asynchronous on one completion queue, so N calls (or N ping-pong streams) stay
 * in flight from a single application thread, the way an event-loop host drives libplexus.
 * Latency percentiles are exact (every sample of the window is kept and sorted). The
 * grpc.testing messages are encoded and checked by hand: SimpleRequest{response_size,
 * payload{body}} out, SimpleResponse.payload.body's length in.
 *
 * Built by benches/c/build-bench-client.sh. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "plexus.h"
#include "varint.h"

#define UNARY_PATH "/grpc.testing.BenchmarkService/UnaryCall"
#define STREAMING_PATH "/grpc.testing.BenchmarkService/StreamingCall"
/* How long one wait on the queue may take before the clock is checked again. */
#define POLL_MS 50
/* A run with no event for this long has hung. */
#define STALL_NS (60ull * 1000000000ull)

static void fail(const char *what, int32_t rc) {
    fprintf(stderr, "plexus-bench-c: %s: %s (%s)\n", what, plexus_result_name(rc), plexus_last_error());
    exit(1);
}

static void ok(int32_t rc, const char *what) {
    if (rc != PLEXUS_OK) fail(what, rc);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    return *user + *sys;
}

/* ---- protobuf by hand ---- */

/* SimpleRequest { response_size = payload; payload = Payload { body = payload zero bytes } },
 * byte for byte what prost and protobuf write. */
static plexus_bytes *bench_request(size_t payload) {
    size_t inner = payload ? 1 + varint_len(payload) + payload : 0;
    size_t total = (payload ? 1 + varint_len(payload) : 0) + 1 + varint_len(inner) + inner;
    uint8_t *buf = calloc(total ? total : 1, 1);
    if (buf == NULL) {
        fprintf(stderr, "plexus-bench-c: out of memory\n");
        exit(1);
    }
    uint8_t *p = buf;
    if (payload) {
        *p++ = 0x10; /* field 2, varint: response_size */
        p = put_varint(p, payload);
    }
    *p++ = 0x1a; /* field 3, bytes: payload */
    p = put_varint(p, inner);
    if (payload) {
        *p++ = 0x12; /* Payload field 2, bytes: body (zeros, already there) */
        p = put_varint(p, payload);
    }
    plexus_bytes *out = NULL;
    ok(plexus_bytes_copy(buf, total, &out), "plexus_bytes_copy");
    free(buf);
    return out;
}

/* Finds length-delimited field `field` in [p, end): its start and length, or false. Skips
 * every other field; returns false on malformed input too (*bad set). */
static bool find_bytes(const uint8_t *p, const uint8_t *end, uint64_t field, const uint8_t **at,
                       uint64_t *len, bool *bad) {
    bool found = false;
    while (p < end) {
        uint64_t key, n;
        if (!get_varint(&p, end, &key)) goto malformed;
        switch (key & 7) {
        case 0:
            if (!get_varint(&p, end, &n)) goto malformed;
            break;
        case 1:
            if (end - p < 8) goto malformed;
            p += 8;
            break;
        case 2:
            if (!get_varint(&p, end, &n) || n > (uint64_t)(end - p)) goto malformed;
            if ((key >> 3) == field) { /* the last occurrence wins, as in protobuf */
                *at = p;
                *len = n;
                found = true;
            }
            p += n;
            break;
        case 5:
            if (end - p < 4) goto malformed;
            p += 4;
            break;
        default:
            goto malformed;
        }
    }
    return found;
malformed:
    *bad = true;
    return false;
}

/* Checks that a SimpleResponse carries `payload` body bytes. */
static void check_response(plexus_bytes *message, size_t payload) {
    const uint8_t *data = NULL;
    size_t n = 0;
    ok(plexus_bytes_data(message, &data, &n), "plexus_bytes_data");
    const uint8_t *sub = NULL, *body = NULL;
    uint64_t sub_len = 0, body_len = 0;
    bool bad = false;
    if (find_bytes(data, data + n, 1, &sub, &sub_len, &bad))
        find_bytes(sub, sub + sub_len, 2, &body, &body_len, &bad);
    if (bad || body_len != payload) {
        fprintf(stderr, "plexus-bench-c: response payload is %" PRIu64 " bytes%s, asked for %zu\n",
                body_len, bad ? " (malformed)" : "", payload);
        exit(1);
    }
}

static void check_status(plexus_status *status, const char *what) {
    int32_t code = 0;
    if (status != NULL) ok(plexus_status_code(status, &code), "plexus_status_code");
    if (code != 0) {
        const char *msg = "";
        plexus_status_message(status, &msg, NULL);
        fprintf(stderr, "plexus-bench-c: %s ended with %s: %s\n", what, plexus_code_name(code), msg);
        exit(1);
    }
}

/* ---- the run ---- */

typedef struct {
    uint64_t *v;
    size_t n, cap;
} samples;

static void push(samples *s, uint64_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (s->v == NULL) {
            fprintf(stderr, "plexus-bench-c: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(const samples *s, double q) {
    if (s->n == 0) return 0.0;
    double rank = q * (double)s->n + 0.5;
    size_t i = rank < 1.0 ? 0 : (size_t)rank - 1;
    if (i >= s->n) i = s->n - 1;
    return (double)s->v[i] / 1000.0;
}

enum { WARMUP, MEASURE, STOP };

typedef struct {
    uint64_t warm_end, measure_end;
    int phase;
    double cpu0, user0, sys0, cpu1, user1, sys1;
    samples lat;
    uint64_t total;
    uint64_t last_event;
} run_state;

/* Moves the phase along the clock; notes the CPU time at the window's edges. */
static void tick(run_state *r, uint64_t t) {
    if (r->phase == WARMUP && t >= r->warm_end) {
        r->phase = MEASURE;
        r->cpu0 = cpu_s(&r->user0, &r->sys0);
    }
    if (r->phase == MEASURE && t >= r->measure_end) {
        r->phase = STOP;
        r->cpu1 = cpu_s(&r->user1, &r->sys1);
    }
}

/* A call that started at `started` completed now; false once the run is over. */
static bool completed(run_state *r, uint64_t started) {
    uint64_t t = now_ns();
    tick(r, t);
    r->total++;
    if (r->phase == MEASURE) push(&r->lat, t - started);
    return r->phase != STOP;
}

static bool next_event(const plexus_cq *cq, run_state *r, plexus_event *ev) {
    int32_t rc = plexus_cq_next(cq, POLL_MS, ev);
    uint64_t t = now_ns();
    tick(r, t);
    if (rc == PLEXUS_ERR_TIMEOUT) {
        if (t - r->last_event > STALL_NS) {
            fprintf(stderr, "plexus-bench-c: no event for 60 s\n");
            exit(1);
        }
        return false;
    }
    ok(rc, "plexus_cq_next");
    r->last_event = t;
    return true;
}

typedef struct {
    uint64_t started;
    const plexus_call *call;
    bool sent, received;
} slot;

static void run_unary(const plexus_channel *ch, const plexus_cq *cq, plexus_bytes *req, size_t payload,
                      int concurrency, run_state *r) {
    slot *slots = calloc((size_t)concurrency, sizeof *slots);
    if (slots == NULL) exit(1);
    for (int i = 0; i < concurrency; i++) {
        slots[i].started = now_ns();
        ok(plexus_unary_async(ch, UNARY_PATH, req, NULL, cq, &slots[i]), "plexus_unary_async");
    }
    int outstanding = concurrency;
    while (outstanding > 0) {
        plexus_event ev;
        if (!next_event(cq, r, &ev)) continue;
        slot *s = ev.tag;
        if (ev.result != PLEXUS_OK) {
            check_status(ev.status, "a unary call");
            fail("a unary call", ev.result);
        }
        check_response(ev.message, payload);
        plexus_bytes_free(ev.message);
        plexus_status_free(ev.status);
        if (completed(r, s->started)) {
            s->started = now_ns();
            ok(plexus_unary_async(ch, UNARY_PATH, req, NULL, cq, s), "plexus_unary_async");
        } else {
            outstanding--;
        }
    }
    free(slots);
}

static void ping(slot *s, plexus_bytes *req, const plexus_cq *cq) {
    s->started = now_ns();
    s->sent = s->received = false;
    ok(plexus_call_send_async(s->call, req, cq, s), "plexus_call_send_async");
    ok(plexus_call_recv_async(s->call, cq, s), "plexus_call_recv_async");
}

static void run_streaming(const plexus_channel *ch, const plexus_cq *cq, plexus_bytes *req, size_t payload,
                          int concurrency, run_state *r) {
    slot *slots = calloc((size_t)concurrency, sizeof *slots);
    if (slots == NULL) exit(1);
    for (int i = 0; i < concurrency; i++)
        ok(plexus_call_start_async(ch, STREAMING_PATH, NULL, cq, &slots[i]), "plexus_call_start_async");
    int outstanding = concurrency;
    while (outstanding > 0) {
        plexus_event ev;
        if (!next_event(cq, r, &ev)) continue;
        slot *s = ev.tag;
        switch (ev.op) {
        case PLEXUS_OP_START:
            if (ev.result != PLEXUS_OK) check_status(ev.status, "starting a stream");
            ok(ev.result, "starting a stream");
            s->call = ev.call;
            ping(s, req, cq);
            continue;
        case PLEXUS_OP_SEND:
            ok(ev.result, "sending on a stream");
            s->sent = true;
            break;
        case PLEXUS_OP_RECV:
            if (ev.result == PLEXUS_END_OF_STREAM) {
                fprintf(stderr, "plexus-bench-c: the server ended a stream early\n");
                exit(1);
            }
            ok(ev.result, "receiving on a stream");
            check_response(ev.message, payload);
            plexus_bytes_free(ev.message);
            s->received = true;
            completed(r, s->started); /* after STOP, the slot closes below */
            break;
        case PLEXUS_OP_CLOSE_SEND:
            ok(ev.result, "half-closing a stream");
            ok(plexus_call_finish_async(s->call, cq, s), "plexus_call_finish_async");
            continue;
        case PLEXUS_OP_FINISH:
            check_status(ev.status, "a stream");
            plexus_status_free(ev.status);
            plexus_call_free(s->call);
            s->call = NULL;
            outstanding--;
            continue;
        default:
            fprintf(stderr, "plexus-bench-c: unexpected event %d\n", (int)ev.op);
            exit(1);
        }
        if (s->sent && s->received) {
            if (r->phase != STOP)
                ping(s, req, cq);
            else
                ok(plexus_call_close_send_async(s->call, cq, s), "plexus_call_close_send_async");
        }
    }
    free(slots);
}

static const char *flag(int argc, char **argv, const char *name, const char *fallback) {
    for (int i = 2; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return fallback;
}

static bool has(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "client") != 0) {
        fprintf(stderr, "usage: %s client --target HOST:PORT [--rpc unary|streaming] [--concurrency N]\n"
                        "       [--payload BYTES] [--duration S] [--warmup S] [--json]\n", argv[0]);
        return 2;
    }
    const char *target = flag(argc, argv, "--target", NULL);
    const char *rpc = flag(argc, argv, "--rpc", "unary");
    int concurrency = atoi(flag(argc, argv, "--concurrency", "1"));
    long payload = atol(flag(argc, argv, "--payload", "0"));
    double duration = atof(flag(argc, argv, "--duration", "5"));
    double warmup = atof(flag(argc, argv, "--warmup", "1"));
    bool streaming = strcmp(rpc, "streaming") == 0;
    if (target == NULL || concurrency < 1 || payload < 0 || duration <= 0 || warmup < 0 ||
        (!streaming && strcmp(rpc, "unary") != 0)) {
        fprintf(stderr, "plexus-bench-c: bad flags (see --help)\n");
        return 2;
    }

    const plexus_channel *ch = NULL;
    ok(plexus_channel_new(target, NULL, &ch), "plexus_channel_new");
    ok(plexus_channel_connect(ch, 30000), "plexus_channel_connect");
    plexus_bytes *req = bench_request((size_t)payload);
    plexus_bytes *first = NULL;
    plexus_status *status = NULL;
    int32_t rc = plexus_unary(ch, UNARY_PATH, req, NULL, 30000, &first, &status);
    if (rc != PLEXUS_OK) check_status(status, "the first call");
    ok(rc, "the first call");
    check_response(first, (size_t)payload);
    plexus_bytes_free(first);
    plexus_status_free(status);

    const plexus_cq *cq = NULL;
    ok(plexus_cq_new(&cq), "plexus_cq_new");
    run_state r;
    memset(&r, 0, sizeof r);
    uint64_t start = now_ns();
    r.last_event = start;
    r.warm_end = start + (uint64_t)(warmup * 1e9);
    r.measure_end = r.warm_end + (uint64_t)(duration * 1e9);
    if (streaming)
        run_streaming(ch, cq, req, (size_t)payload, concurrency, &r);
    else
        run_unary(ch, cq, req, (size_t)payload, concurrency, &r);

    qsort(r.lat.v, r.lat.n, sizeof *r.lat.v, cmp_u64);
    double rate = (double)r.lat.n / duration;
    double cpu = r.cpu1 - r.cpu0;
    double sum = 0;
    for (size_t i = 0; i < r.lat.n; i++) sum += (double)r.lat.v[i];
    double mean_us = r.lat.n ? sum / (double)r.lat.n / 1000.0 : 0.0;
    double max_us = r.lat.n ? (double)r.lat.v[r.lat.n - 1] / 1000.0 : 0.0;
    if (has(argc, argv, "--json")) {
        printf("{\"client\":\"plexus-c\",\"rpc\":\"%s\",\"concurrency\":%d,\"payload\":%ld,"
               "\"duration_s\":%.6f,\"calls\":%zu,\"calls_total\":%" PRIu64 ",\"calls_per_s\":%.3f,"
               "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f,\"mean_us\":%.3f,"
               "\"bytes_per_s\":%.3f,\"cpu_user_s\":%.6f,\"cpu_system_s\":%.6f,\"cpu_s\":%.6f,"
               "\"cpu_us_per_call\":%.3f}\n",
               rpc, concurrency, payload, duration, r.lat.n, r.total, rate, percentile_us(&r.lat, 0.5),
               percentile_us(&r.lat, 0.9), percentile_us(&r.lat, 0.99), max_us, mean_us,
               rate * 2.0 * (double)payload, r.user1 - r.user0, r.sys1 - r.sys0, cpu,
               r.lat.n ? cpu * 1e6 / (double)r.lat.n : 0.0);
    } else {
        printf("plexus-c %s x%d payload %ld B: %.0f calls/s, latency p50 %.1f µs p90 %.1f µs p99 %.1f µs, "
               "client CPU %.2f s\n",
               rpc, concurrency, payload, rate, percentile_us(&r.lat, 0.5), percentile_us(&r.lat, 0.9),
               percentile_us(&r.lat, 0.99), cpu);
    }
    free(r.lat.v);
    plexus_bytes_free(req);
    plexus_cq_free(cq);
    plexus_channel_free(ch);
    ok(plexus_shutdown(), "plexus_shutdown");
    return 0;
}
