/* plexus-echo-server-c: the BenchmarkService server of the matrix (plexus-bench matrix, server
 * "plexus-c") written in C on libplexus's server ABI. It answers what the Rust plexus server
 * answers (interop/src/server.rs, bench_response): UnaryCall and StreamingCall (one response per
 * request) with SimpleResponse { payload = Payload { body = response_size zero bytes } }, and
 * INVALID_ARGUMENT for a negative response_size or an unknown response_type.
 *
 *   plexus-echo-server-c server --listen HOST:PORT [--threads N] [--queue]
 *
 * Prints `listening on HOST:PORT` (the bound port) once it accepts calls, then serves until it
 * is killed. A unary call is answered in a callback that plexus runs on its worker as the call
 * arrives (plexus_server_register_method_callback): the request comes in, and
 * plexus_server_call_finish answers with the response and the status in one step, with no
 * hand-off between threads. With --queue it arrives instead as an event on the completion
 * queue below, and the thread that takes it answers the same way. Streaming calls always go
 * through that queue, which N threads (default: one per core) wait on: the calls and their
 * receives report to it, so a streaming message costs one event (its receive) and a blocking
 * send.
 *
 * Built by benches/c/build-echo-server.sh. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plexus.h"
#include "varint.h"

#define UNARY_PATH "/grpc.testing.BenchmarkService/UnaryCall"
#define STREAMING_PATH "/grpc.testing.BenchmarkService/StreamingCall"
/* Responses at most this big are built on the stack and copied; bigger ones are built once in
 * heap memory that plexus sends without a copy (plexus_bytes_wrap) and frees when done. */
#define COPY_LIMIT 8192

static void fail(const char *what, int32_t rc) {
    fprintf(stderr, "plexus-echo-server-c: %s: %s (%s)\n", what, plexus_result_name(rc),
            plexus_last_error());
    exit(1);
}

static void ok(int32_t rc, const char *what) {
    if (rc != PLEXUS_OK) fail(what, rc);
}

/* ---- protobuf by hand ---- */

/* Reads SimpleRequest's response_type (field 1) and response_size (field 2), skipping the
 * rest. Returns false for a malformed message. */
static bool parse_request(const plexus_bytes *msg, int64_t *type, int64_t *size) {
    const uint8_t *p = NULL;
    size_t len = 0;
    ok(plexus_bytes_data(msg, &p, &len), "plexus_bytes_data");
    const uint8_t *end = p + len;
    *type = 0;
    *size = 0;
    while (p < end) {
        uint64_t key = 0, v = 0;
        if (!get_varint(&p, end, &key)) return false;
        switch (key & 7) {
        case 0:
            if (!get_varint(&p, end, &v)) return false;
            /* int32 fields: negative values are sign-extended to 64 bits on the wire. */
            if ((key >> 3) == 1) *type = (int64_t)v;
            if ((key >> 3) == 2) *size = (int64_t)v;
            break;
        case 1:
            if (end - p < 8) return false;
            p += 8;
            break;
        case 2:
            if (!get_varint(&p, end, &v) || v > (uint64_t)(end - p)) return false;
            p += v;
            break;
        case 5:
            if (end - p < 4) return false;
            p += 4;
            break;
        default:
            return false;
        }
    }
    return true;
}

static void release_heap(void *context) { free(context); }

/* SimpleResponse { payload = Payload { body = size zero bytes } } as prost writes it (type
 * COMPRESSABLE is 0, the default, so it is left out). */
static plexus_bytes *response(size_t size) {
    size_t inner = size ? 1 + varint_len(size) + size : 0;
    size_t total = 1 + varint_len(inner) + inner;
    uint8_t stack[COPY_LIMIT + 32];
    uint8_t *buf = total <= sizeof stack ? stack : malloc(total);
    if (buf == NULL) {
        fprintf(stderr, "plexus-echo-server-c: out of memory for a %zu-byte response\n", total);
        exit(1);
    }
    uint8_t *p = buf;
    *p++ = 0x0a;
    p = put_varint(p, inner);
    if (size) {
        *p++ = 0x12;
        p = put_varint(p, size);
        memset(p, 0, size);
    }
    plexus_bytes *out = NULL;
    if (buf == stack) {
        ok(plexus_bytes_copy(buf, total, &out), "plexus_bytes_copy");
    } else {
        ok(plexus_bytes_wrap(buf, total, release_heap, buf, &out), "plexus_bytes_wrap");
    }
    return out;
}

/* The response to one request, or NULL with the status to end the call with. */
static plexus_bytes *answer(const plexus_bytes *request, int32_t *code, const char **why) {
    int64_t type = 0, size = 0;
    if (!parse_request(request, &type, &size)) {
        *code = 13; /* INTERNAL, as a failed decode is in plexus */
        *why = "malformed SimpleRequest";
        return NULL;
    }
    if (type != 0) {
        *code = 3; /* INVALID_ARGUMENT */
        *why = "unsupported response_type";
        return NULL;
    }
    if (size < 0 || size > INT32_MAX) {
        *code = 3;
        *why = "response size is negative";
        return NULL;
    }
    return response((size_t)size);
}

/* ---- the calls ---- */

/* Registration tags: which method an incoming call is for. */
static int unary_tag, streaming_tag;

/* The one queue: incoming calls and the streams' receives. */
static const plexus_cq *cq;

/* One StreamingCall. Its receives report to the queue; each response is sent with the
 * blocking send from the thread that took the request (it returns once the message is handed
 * to the connection, which for ping-pong is at once, and saves an event per message), then
 * the next receive is asked for. So one operation at most is outstanding, and the status
 * goes out after every response. */
static void stream_recv(const plexus_server_call *call) {
    if (plexus_server_call_recv_async(call, cq, (void *)call) != PLEXUS_OK) {
        /* Only when the queue is shut down: nothing left to do. */
        plexus_server_call_free(call);
    }
}

static void on_unary(const plexus_server_call *call, plexus_bytes *request) {
    int32_t code = 0;
    const char *why = NULL;
    plexus_bytes *resp = answer(request, &code, &why);
    plexus_bytes_free(request);
    /* PLEXUS_OK even when the client went away meanwhile; nothing to do on failure either. */
    (void)plexus_server_call_finish(call, resp, code, why, NULL);
    plexus_bytes_free(resp);
    plexus_server_call_free(call);
}

/* plexus calls this on its own worker as each UnaryCall arrives (unless --queue), and the
 * answer goes out from there, with no queue and no hand-off to a thread of ours. */
static void on_unary_callback(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    (void)user_data;
    on_unary(call, request);
}

static void on_stream_recv(const plexus_server_call *call, const plexus_event *ev) {
    if (ev->result == PLEXUS_OK) {
        int32_t code = 0;
        const char *why = NULL;
        plexus_bytes *resp = answer(ev->message, &code, &why);
        plexus_bytes_free(ev->message);
        if (resp == NULL) {
            (void)plexus_server_call_finish(call, NULL, code, why, NULL);
            plexus_server_call_free(call);
            return;
        }
        int32_t rc = plexus_server_call_send(call, resp, 0, -1);
        plexus_bytes_free(resp);
        if (rc == PLEXUS_OK) {
            stream_recv(call);
            return;
        }
        /* The call is over (the client went away). */
    } else if (ev->result == PLEXUS_END_OF_STREAM) {
        (void)plexus_server_call_finish(call, NULL, 0, NULL, NULL);
    }
    /* PLEXUS_ERR_RPC: plexus already ended the call. */
    plexus_status_free(ev->status);
    plexus_server_call_free(call);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        plexus_event ev;
        int32_t rc = plexus_cq_next(cq, -1, &ev);
        if (rc == PLEXUS_ERR_SHUTDOWN) return NULL;
        ok(rc, "plexus_cq_next");
        switch (ev.op) {
        case PLEXUS_OP_SERVER_CALL:
            if (ev.tag == &unary_tag) {
                on_unary(ev.server_call, ev.message);
            } else {
                plexus_bytes_free(ev.message);
                stream_recv(ev.server_call);
            }
            break;
        case PLEXUS_OP_RECV:
            on_stream_recv(ev.tag, &ev);
            break;
        default:
            fprintf(stderr, "plexus-echo-server-c: unexpected event op %d\n", (int)ev.op);
            exit(1);
        }
    }
}

static void usage(void) {
    fprintf(stderr, "usage: plexus-echo-server-c server --listen HOST:PORT [--threads N] [--queue]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:0";
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    bool queue = false;
    int i = 1;
    if (i < argc && strcmp(argv[i], "server") == 0) i++;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = strtol(argv[++i], NULL, 10);
            if (threads < 1 || threads > 1024) usage();
        } else if (strcmp(argv[i], "--queue") == 0) {
            queue = true;
        } else {
            usage();
        }
    }
    if (threads < 1) threads = 1;

    ok(plexus_cq_new(&cq), "plexus_cq_new");
    const plexus_server *server = NULL;
    ok(plexus_server_new(NULL, &server), "plexus_server_new");
    if (queue) {
        ok(plexus_server_register_method(server, UNARY_PATH, PLEXUS_METHOD_UNARY, cq, &unary_tag),
           "register UnaryCall");
    } else {
        ok(plexus_server_register_method_callback(server, UNARY_PATH, PLEXUS_METHOD_UNARY,
                                                  on_unary_callback, NULL),
           "register UnaryCall");
    }
    ok(plexus_server_register_method(server, STREAMING_PATH, PLEXUS_METHOD_BIDI_STREAMING, cq,
                                     &streaming_tag),
       "register StreamingCall");
    int32_t port = 0;
    ok(plexus_server_add_listener(server, listen, NULL, &port), "plexus_server_add_listener");
    ok(plexus_server_start(server), "plexus_server_start");

    pthread_t *pool = calloc((size_t)threads, sizeof *pool);
    if (pool == NULL) fail("calloc", PLEXUS_ERR_SYSTEM);
    for (long t = 0; t < threads; t++) {
        if (pthread_create(&pool[t], NULL, worker, NULL) != 0) fail("pthread_create", PLEXUS_ERR_SYSTEM);
    }
    /* The host part of --listen with the bound port: "127.0.0.1:0" -> "127.0.0.1:40123". */
    const char *colon = strrchr(listen, ':');
    int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);
    printf("listening on %.*s:%d\n", host_len, listen, (int)port);
    fflush(stdout);
    for (long t = 0; t < threads; t++) pthread_join(pool[t], NULL);
    return 0;
}
