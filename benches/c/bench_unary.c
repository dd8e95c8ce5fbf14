/* The C side of the ABI benchmark (benches/c/run.sh): unary calls through libplexus against
 * the echo server of tests/peer.
 *
 *   bench_unary TARGET throughput IN_FLIGHT SECONDS   calls/s with IN_FLIGHT calls kept in
 *                                                     flight through a completion queue
 *   bench_unary TARGET latency SECONDS                p50 and p99 of blocking calls, one at a
 *                                                     time
 *
 * Prints one line: `c <mode> <in-flight> calls_per_sec=<n> p50_us=<n> p99_us=<n>`. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

#define UNARY "/plexus.peer.Echo/Unary"

static void ok(int32_t rc, const char *what) {
    if (rc != PLEXUS_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, plexus_result_name(rc), plexus_last_error());
        exit(1);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* plexus.peer.EchoRequest { message = "bench"; payload = 64 bytes }. */
static plexus_bytes *request(void) {
    uint8_t buf[128];
    size_t n = 0;
    buf[n++] = 0x0a;
    buf[n++] = 5;
    memcpy(buf + n, "bench", 5);
    n += 5;
    buf[n++] = 0x32;
    buf[n++] = 64;
    memset(buf + n, 7, 64);
    n += 64;
    plexus_bytes *b = NULL;
    ok(plexus_bytes_copy(buf, n, &b), "plexus_bytes_copy");
    return b;
}

static void throughput(const plexus_channel *ch, plexus_bytes *req, int in_flight, double secs) {
    const plexus_cq *cq = NULL;
    ok(plexus_cq_new(&cq), "plexus_cq_new");
    for (int i = 0; i < in_flight; i++) ok(plexus_unary_async(ch, UNARY, req, NULL, cq, NULL), "submit");
    /* Warm up for half a second, then count. */
    double start = now_s(), counted_from = start + 0.5, end = counted_from + secs;
    uint64_t calls = 0;
    int outstanding = in_flight;
    while (outstanding > 0) {
        plexus_event ev;
        ok(plexus_cq_next(cq, 30000, &ev), "plexus_cq_next");
        ok(ev.result, "call");
        plexus_bytes_free(ev.message);
        plexus_status_free(ev.status);
        double t = now_s();
        if (t >= counted_from && t < end) calls++;
        if (t < end) {
            ok(plexus_unary_async(ch, UNARY, req, NULL, cq, NULL), "submit");
        } else {
            outstanding--;
        }
    }
    printf("c throughput %d calls_per_sec=%.0f p50_us=0 p99_us=0\n", in_flight, (double)calls / secs);
    plexus_cq_free(cq);
}

static void latency(const plexus_channel *ch, plexus_bytes *req, double secs) {
    size_t cap = 1 << 22, n = 0;
    double *samples = malloc(cap * sizeof *samples);
    if (samples == NULL) exit(1);
    double warm_until = now_s() + 0.5;
    while (now_s() < warm_until) {
        plexus_bytes *resp = NULL;
        ok(plexus_unary(ch, UNARY, req, NULL, -1, &resp, NULL), "plexus_unary");
        plexus_bytes_free(resp);
    }
    double start = now_s(), end = start + secs;
    for (;;) {
        double t0 = now_s();
        if (t0 >= end || n == cap) break;
        plexus_bytes *resp = NULL;
        ok(plexus_unary(ch, UNARY, req, NULL, -1, &resp, NULL), "plexus_unary");
        samples[n++] = now_s() - t0;
        plexus_bytes_free(resp);
    }
    double total = now_s() - start;
    qsort(samples, n, sizeof *samples, cmp_double);
    printf("c latency 1 calls_per_sec=%.0f p50_us=%.1f p99_us=%.1f\n", (double)n / total,
           samples[n / 2] * 1e6, samples[n * 99 / 100] * 1e6);
    free(samples);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TARGET throughput IN_FLIGHT SECONDS | TARGET latency SECONDS\n", argv[0]);
        return 2;
    }
    const plexus_channel *ch = NULL;
    ok(plexus_channel_new(argv[1], NULL, &ch), "plexus_channel_new");
    ok(plexus_channel_connect(ch, 30000), "plexus_channel_connect");
    plexus_bytes *req = request();
    if (strcmp(argv[2], "throughput") == 0 && argc == 5) {
        throughput(ch, req, atoi(argv[3]), atof(argv[4]));
    } else if (strcmp(argv[2], "latency") == 0) {
        latency(ch, req, atof(argv[3]));
    } else {
        return 2;
    }
    plexus_bytes_free(req);
    plexus_channel_free(ch);
    ok(plexus_shutdown(), "plexus_shutdown");
    return 0;
}
