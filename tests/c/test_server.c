/* The server half of plexus.h: plexus servers in this process, called by plexus's own C client
 * (and, for calls made on behalf of a server call, by the Rust echo server that
 * scripts/test-c.sh starts, PLEXUS_TEST_TARGET). Listeners on TCP, Unix and abstract sockets,
 * TLS and mutual TLS (certificates from `plexus-peer certs` in PLEXUS_TEST_CERTS); every method
 * kind and the catch-all; the request's method, metadata, deadline and peer; streams driven
 * asynchronously through a completion queue and its fd with poll(), and with the blocking
 * operations on threads; initial and trailing metadata and status details; cancellation,
 * deadlines, size and concurrency limits; graceful and forced shutdown; zero-copy responses;
 * deadline and cancellation propagation to child calls; bad arguments and wrong states.
 *
 * No check depends on how long anything takes: waits have generous limits only so that a
 * broken build fails instead of hanging. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define M_UNARY "/plexus.test.Server/Unary"
#define M_SERVER_STREAM "/plexus.test.Server/ServerStream"
#define M_CLIENT_STREAM "/plexus.test.Server/ClientStream"
#define M_BIDI "/plexus.test.Server/Bidi"
#define M_CHILD "/plexus.test.Server/Child"
#define M_UNKNOWN "/plexus.test.Other/Anything"

/* Checks that `expr` fails with `code` and leaves an error text. */
#define EXPECT_ERR(expr, code)                                                             \
    do {                                                                                   \
        EXPECT(expr, code);                                                                \
        CHECK(plexus_last_error()[0] != '\0');                                             \
    } while (0)

/* A behaviour the ABI documents that libplexus does not have yet: printed, and fatal only
 * with PLEXUS_TEST_STRICT=1 (set it to check a fix). */
#define KNOWN_BUG(cond, what)                                                              \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            printf("  KNOWN ABI BUG (%s:%d): %s\n", __FILE__, __LINE__, what);             \
            const char *strict_ = getenv("PLEXUS_TEST_STRICT");                            \
            CHECK(strict_ == NULL || strcmp(strict_, "1") != 0);                           \
        }                                                                                  \
    } while (0)

/* Registration tags: which method an incoming call is for. */
static int TAG_UNARY, TAG_SERVER_STREAM, TAG_CLIENT_STREAM, TAG_BIDI, TAG_CHILD, TAG_CATCH_ALL;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *env(const char *name) {
    const char *value = getenv(name);
    if (value == NULL || value[0] == '\0') {
        fprintf(stderr, "%s is not set (scripts/test-c.sh sets it)\n", name);
        exit(2);
    }
    return value;
}

/* Reads PLEXUS_TEST_CERTS/`name` into a new NUL-terminated string (free it). */
static char *read_pem(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", env("PLEXUS_TEST_CERTS"), name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    char *buf = calloc(1, 1 << 16);
    CHECK(buf != NULL);
    size_t len = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    CHECK(len > 0);
    return buf;
}

static int32_t code_of(const plexus_status *status) { return status_code(status); }

/* Whether `md` holds `key` with the ASCII value `want`. */
static int md_has(const plexus_metadata *md, const char *key, const char *want) {
    const uint8_t *value = NULL;
    size_t len = 0;
    OK(plexus_metadata_get(md, key, &value, &len));
    return value != NULL && len == strlen(want) && memcmp(value, want, len) == 0;
}

/* ---- completion queue: events by tag, waited for with poll() on the queue's fd ---- */

#define STASH 64
static plexus_event stash[STASH];
static int stashed = 0;

/* The line of the test waiting for an event, for the message when none comes. */
static int waiting_line = 0;

/* The next event of `q`, waiting for its fd to become readable with poll(). */
static plexus_event wait_event(const plexus_cq *q) {
    int32_t fd = -1;
    OK(plexus_cq_fd(q, &fd));
    CHECK(fd >= 0);
    plexus_event ev;
    for (int i = 0; i < 1000; i++) {
        int32_t rc = plexus_cq_next(q, 0, &ev);
        if (rc == PLEXUS_OK) return ev;
        EXPECT(rc, PLEXUS_ERR_TIMEOUT);
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        int n = poll(&p, 1, LONG_MS);
        if (n != 1 || !(p.revents & POLLIN)) {
            fprintf(stderr, "no event came for the wait at line %d\n", waiting_line);
        }
        CHECK(n == 1 && (p.revents & POLLIN));
    }
    CHECK(!"the queue's fd stayed readable with no event to take");
    return ev;
}

/* The event with `tag` (events with other tags wait in the stash for their turn). */
#define take(q, tag) (waiting_line = __LINE__, take_event(q, tag))
static plexus_event take_event(const plexus_cq *q, const void *tag) {
    for (int i = 0; i < stashed; i++) {
        if (stash[i].tag == tag) {
            plexus_event ev = stash[i];
            stash[i] = stash[--stashed];
            return ev;
        }
    }
    for (;;) {
        plexus_event ev = wait_event(q);
        if (ev.tag == tag) return ev;
        CHECK(stashed < STASH);
        stash[stashed++] = ev;
    }
}

/* The first event with tag `a` or `b`. */
static plexus_event take_either(const plexus_cq *q, const void *a, const void *b) {
    for (;;) {
        for (int i = 0; i < stashed; i++) {
            if (stash[i].tag == a || stash[i].tag == b) {
                plexus_event ev = stash[i];
                stash[i] = stash[--stashed];
                return ev;
            }
        }
        plexus_event ev = wait_event(q);
        CHECK(stashed < STASH);
        stash[stashed++] = ev;
    }
}

/* Whether an event with `tag` has come already (without waiting). */
static int has_come(const plexus_cq *q, const void *tag) {
    plexus_event ev;
    while (plexus_cq_next(q, 0, &ev) == PLEXUS_OK) {
        CHECK(stashed < STASH);
        stash[stashed++] = ev;
    }
    for (int i = 0; i < stashed; i++) {
        if (stash[i].tag == tag) return 1;
    }
    return 0;
}

/* An incoming call with registration `tag`: checks the event and returns the call. */
static const plexus_server_call *take_call(const plexus_cq *q, const void *tag,
                                           plexus_bytes **message) {
    plexus_event ev = take(q, tag);
    CHECK(ev.op == PLEXUS_OP_SERVER_CALL && ev.result == PLEXUS_OK && ev.server_call != NULL);
    if (message != NULL) {
        *message = ev.message;
    } else {
        plexus_bytes_free(ev.message);
    }
    return ev.server_call;
}

/* ---- a server with a channel to it ---- */

typedef struct {
    const plexus_server *server;
    const plexus_cq *cq; /* registrations and the test's own operations report here */
    const plexus_channel *channel;
    int32_t port;
    char target[64];
    pthread_t loop;
    int looping;
} fixture;

static void fx_init(fixture *f, const plexus_server_options *options) {
    memset(f, 0, sizeof *f);
    CHECK(stashed == 0);
    OK(plexus_cq_new(&f->cq));
    OK(plexus_server_new(options, &f->server));
}

static void fx_register(fixture *f, const char *path, plexus_method_kind kind, void *tag) {
    OK(plexus_server_register_method(f->server, path, kind, f->cq, tag));
}

/* Listens on 127.0.0.1 (port 0), starts, and opens a channel of its own to it. */
static void fx_start(fixture *f) {
    f->port = -1;
    OK(plexus_server_add_listener(f->server, "127.0.0.1:0", NULL, &f->port));
    CHECK(f->port > 0);
    OK(plexus_server_start(f->server));
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", (int)f->port);
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_shared(o, false));
    OK(plexus_channel_new(f->target, o, &f->channel));
    plexus_channel_options_free(o);
}

/* Frees the events nobody took. */
static void drop_stash(void) {
    for (int i = 0; i < stashed; i++) {
        plexus_bytes_free(stash[i].message);
        plexus_status_free(stash[i].status);
        plexus_metadata_free(stash[i].metadata);
        plexus_call_free(stash[i].call);
        plexus_server_call_free(stash[i].server_call);
    }
    stashed = 0;
}

static void fx_end(fixture *f) {
    plexus_channel_free(f->channel);
    OK(plexus_server_shutdown(f->server, 0));
    OK(plexus_cq_shutdown(f->cq));
    if (f->looping) CHECK(pthread_join(f->loop, NULL) == 0);
    drop_stash();
    plexus_server_free(f->server);
    plexus_cq_free(f->cq);
}

/* ---- an echo service run by a thread on the fixture's queue with blocking operations ---- */

/* What the last unary call's handler saw. */
static struct {
    pthread_mutex_t lock;
    char method[128];
    char peer[128];
    char x_test[64];
    int64_t deadline;
    int had_message;
    size_t cert_len;    /* the client's TLS certificate, DER */
    uint8_t cert_first; /* its first byte (0x30: a DER SEQUENCE) */
} seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void record(const plexus_server_call *call, const plexus_bytes *message) {
    const char *method = NULL, *peer = NULL;
    const plexus_metadata *md = NULL;
    int64_t deadline = 0;
    OK(plexus_server_call_method(call, &method));
    OK(plexus_server_call_peer(call, &peer));
    OK(plexus_server_call_metadata(call, &md));
    OK(plexus_server_call_deadline(call, &deadline));
    const uint8_t *value = NULL, *der = NULL;
    size_t len = 0, der_len = 0;
    OK(plexus_metadata_get(md, "x-test", &value, &len));
    OK(plexus_server_call_peer_certificate(call, &der, &der_len));
    CHECK((der == NULL) == (der_len == 0));
    pthread_mutex_lock(&seen.lock);
    seen.cert_len = der_len;
    seen.cert_first = der_len ? der[0] : 0;
    snprintf(seen.method, sizeof seen.method, "%s", method);
    snprintf(seen.peer, sizeof seen.peer, "%s", peer);
    snprintf(seen.x_test, sizeof seen.x_test, "%.*s", (int)len, value ? (const char *)value : "");
    seen.deadline = deadline;
    seen.had_message = message != NULL;
    pthread_mutex_unlock(&seen.lock);
}

/* Serves one call: unary echoes, server streaming sends the request three times, client
 * streaming answers with the last request, bidi and the catch-all echo every request. A
 * client that goes away ends it early (sends and receives fail, finish still succeeds). */
static void serve_echo(const void *tag, const plexus_server_call *call, plexus_bytes *message) {
    if (tag == &TAG_UNARY) {
        record(call, message);
        OK(plexus_server_call_finish(call, message, 0, NULL, NULL));
    } else if (tag == &TAG_SERVER_STREAM) {
        for (int i = 0; i < 3; i++) {
            if (plexus_server_call_send(call, message, 0, LONG_MS) != PLEXUS_OK) break;
        }
        OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    } else {
        if (tag == &TAG_CATCH_ALL) record(call, message);
        plexus_bytes *last = NULL, *m = NULL;
        int32_t rc;
        while ((rc = plexus_server_call_recv(call, LONG_MS, &m)) == PLEXUS_OK) {
            if (tag != &TAG_CLIENT_STREAM && plexus_server_call_send(call, m, 0, LONG_MS) != PLEXUS_OK) {
                plexus_bytes_free(m);
                break;
            }
            plexus_bytes_free(last);
            last = m;
        }
        CHECK(rc == PLEXUS_OK || rc == PLEXUS_END_OF_STREAM || rc == PLEXUS_ERR_RPC);
        OK(plexus_server_call_finish(call, tag == &TAG_CLIENT_STREAM ? last : NULL, 0, NULL, NULL));
        plexus_bytes_free(last);
    }
    plexus_bytes_free(message);
    plexus_server_call_free(call);
}

typedef struct {
    const void *tag;
    const plexus_server_call *call;
    plexus_bytes *message;
} job;

static void *serve_job(void *arg) {
    job *j = arg;
    serve_echo(j->tag, j->call, j->message);
    free(j);
    return NULL;
}

typedef struct {
    const plexus_cq *cq;
    int threaded;
} loop_args;

/* Takes incoming calls until the queue shuts down; serves each inline, or (threaded) on a
 * thread of its own, joined before returning. */
static void *echo_loop(void *arg) {
    loop_args a = *(loop_args *)arg;
    free(arg);
    pthread_t threads[64];
    int n = 0;
    for (;;) {
        plexus_event ev;
        int32_t rc = plexus_cq_next(a.cq, -1, &ev);
        if (rc == PLEXUS_ERR_SHUTDOWN) break;
        OK(rc);
        CHECK(ev.op == PLEXUS_OP_SERVER_CALL);
        if (a.threaded) {
            job *j = malloc(sizeof *j);
            CHECK(j != NULL && n < 64);
            j->tag = ev.tag;
            j->call = ev.server_call;
            j->message = ev.message;
            CHECK(pthread_create(&threads[n++], NULL, serve_job, j) == 0);
        } else {
            serve_echo(ev.tag, ev.server_call, ev.message);
        }
    }
    for (int i = 0; i < n; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    return NULL;
}

static void fx_echo(fixture *f, int threaded) {
    loop_args *a = malloc(sizeof *a);
    CHECK(a != NULL);
    a->cq = f->cq;
    a->threaded = threaded;
    CHECK(pthread_create(&f->loop, NULL, echo_loop, a) == 0);
    f->looping = 1;
}

static void register_all(fixture *f) {
    fx_register(f, M_UNARY, PLEXUS_METHOD_UNARY, &TAG_UNARY);
    fx_register(f, M_SERVER_STREAM, PLEXUS_METHOD_SERVER_STREAMING, &TAG_SERVER_STREAM);
    fx_register(f, M_CLIENT_STREAM, PLEXUS_METHOD_CLIENT_STREAMING, &TAG_CLIENT_STREAM);
    fx_register(f, M_BIDI, PLEXUS_METHOD_BIDI_STREAMING, &TAG_BIDI);
}

/* A blocking unary call of `text` on `ch`; returns the result and checks the echo. */
static int32_t echo_unary(const plexus_channel *ch, const char *method, const char *text,
                          const plexus_call_options *o, int32_t *code) {
    plexus_bytes *req = request_text(text), *resp = NULL;
    plexus_status *status = NULL;
    int32_t rc = plexus_unary(ch, method, req, o, LONG_MS, &resp, &status);
    *code = status ? code_of(status) : -1;
    if (rc == PLEXUS_OK) CHECK(response_is(resp, text));
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_status_free(status);
    return rc;
}

/* Call options (free them) whose metadata has x-test: `value`. */
static plexus_call_options *options_with_x_test(const char *value) {
    plexus_call_options *o = NULL;
    OK(plexus_call_options_new(&o));
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "x-test", value));
    OK(plexus_call_options_set_metadata(o, md));
    plexus_metadata_free(md);
    return o;
}

/* A server-streaming call of "thrice" on M_SERVER_STREAM: three echoes, then OK. */
static void check_thrice(const plexus_channel *ch) {
    plexus_bytes *req = request_text("thrice"), *m = NULL;
    const plexus_call *call = NULL;
    plexus_status *status = NULL;
    OK(plexus_call_start_server_streaming(ch, M_SERVER_STREAM, req, NULL, LONG_MS, &call,
                                          &status));
    plexus_bytes_free(req);
    for (int i = 0; i < 3; i++) {
        OK(plexus_call_recv(call, LONG_MS, &m));
        CHECK(response_is(m, "thrice"));
        plexus_bytes_free(m);
    }
    EXPECT(plexus_call_recv(call, LONG_MS, &m), PLEXUS_END_OF_STREAM);
    OK(plexus_call_finish(call, LONG_MS, &status));
    CHECK(status == NULL || code_of(status) == 0);
    plexus_status_free(status);
    plexus_call_free(call);
}

/* A bidi call on M_BIDI: three requests, each echoed before the next goes, then OK. */
static void check_bidi_echo(const plexus_channel *ch) {
    const char *texts[3] = {"one", "two", "three"};
    plexus_bytes *req = NULL, *m = NULL;
    const plexus_call *call = NULL;
    plexus_status *status = NULL;
    OK(plexus_call_start(ch, M_BIDI, NULL, LONG_MS, &call, NULL));
    for (int i = 0; i < 3; i++) {
        req = request_text(texts[i]);
        OK(plexus_call_send(call, req, LONG_MS));
        plexus_bytes_free(req);
        OK(plexus_call_recv(call, LONG_MS, &m));
        CHECK(response_is(m, texts[i]));
        plexus_bytes_free(m);
    }
    OK(plexus_call_close_send(call, LONG_MS));
    EXPECT(plexus_call_recv(call, LONG_MS, &m), PLEXUS_END_OF_STREAM);
    OK(plexus_call_finish(call, LONG_MS, &status));
    CHECK(status == NULL || code_of(status) == 0);
    plexus_status_free(status);
    plexus_call_free(call);
}

/* ---- the tests ---- */

/* Listeners: TCP on port 0 (the bound port written), a Unix socket path, an abstract socket,
 * one added after start; the peer as grpc writes it; binding errors. */
static void test_listeners(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    int32_t port = -1, unix_port = -1;
    OK(plexus_server_add_listener(f.server, "127.0.0.1:0", NULL, &port));
    CHECK(port > 0);
    char path[128], addr[160], abstract[160], target[64];
    snprintf(path, sizeof path, "/tmp/plexus-test-server-%d.sock", (int)getpid());
    unlink(path);
    snprintf(addr, sizeof addr, "unix:%s", path);
    OK(plexus_server_add_listener(f.server, addr, NULL, &unix_port));
    CHECK(unix_port == 0);
    snprintf(abstract, sizeof abstract, "unix-abstract:plexus-test-server-%d", (int)getpid());
    OK(plexus_server_add_listener(f.server, abstract, NULL, NULL));
    /* The port is taken now; malformed addresses are refused. */
    snprintf(target, sizeof target, "127.0.0.1:%d", (int)port);
    EXPECT_ERR(plexus_server_add_listener(f.server, target, NULL, NULL), PLEXUS_ERR_SYSTEM);
    EXPECT_ERR(plexus_server_add_listener(f.server, "no port here", NULL, NULL),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_add_listener(f.server, "127.0.0.1:99999", NULL, NULL),
               PLEXUS_ERR_INVALID_ARGUMENT);
    OK(plexus_server_start(f.server));
    fx_echo(&f, 0);
    /* A listener added after start accepts at once. */
    int32_t late = -1;
    OK(plexus_server_add_listener(f.server, "127.0.0.1:0", NULL, &late));
    CHECK(late > 0 && late != port);

    struct {
        char target[160];
        const char *peer_prefix;
    } targets[4];
    snprintf(targets[0].target, sizeof targets[0].target, "127.0.0.1:%d", (int)port);
    targets[0].peer_prefix = "ipv4:127.0.0.1:";
    snprintf(targets[1].target, sizeof targets[1].target, "%s", addr);
    targets[1].peer_prefix = "unix:";
    snprintf(targets[2].target, sizeof targets[2].target, "%s", abstract);
    targets[2].peer_prefix = "unix:";
    snprintf(targets[3].target, sizeof targets[3].target, "127.0.0.1:%d", (int)late);
    targets[3].peer_prefix = "ipv4:127.0.0.1:";
    for (int i = 0; i < 4; i++) {
        const plexus_channel *ch = NULL;
        OK(plexus_channel_new(targets[i].target, NULL, &ch));
        int32_t code = -1;
        OK(echo_unary(ch, M_UNARY, "over a listener", NULL, &code));
        CHECK(code == 0);
        pthread_mutex_lock(&seen.lock);
        CHECK(strncmp(seen.peer, targets[i].peer_prefix, strlen(targets[i].peer_prefix)) == 0);
        CHECK(seen.cert_len == 0); /* not TLS */
        pthread_mutex_unlock(&seen.lock);
        plexus_channel_free(ch);
    }
    fx_end(&f);
    unlink(path);
}

/* TLS on a listener; mutual TLS with a required client certificate, and an optional one. */
static void test_tls(void) {
    char *cert = read_pem("server.pem"), *key = read_pem("server.key"), *ca = read_pem("ca.pem");
    char *client_cert = read_pem("client.pem"), *client_key = read_pem("client.key");
    plexus_server_tls *tls = NULL, *mtls = NULL, *optional = NULL, *bad = NULL;
    OK(plexus_server_tls_new(cert, key, &tls));
    OK(plexus_server_tls_new(cert, key, &mtls));
    OK(plexus_server_tls_set_client_ca_pem(mtls, ca, true));
    OK(plexus_server_tls_new(cert, key, &optional));
    OK(plexus_server_tls_set_client_ca_pem(optional, ca, false));
    OK(plexus_server_tls_new("not a certificate", key, &bad));

    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    int32_t p_tls = -1, p_mtls = -1, p_opt = -1;
    OK(plexus_server_add_listener(f.server, "127.0.0.1:0", tls, &p_tls));
    OK(plexus_server_add_listener(f.server, "127.0.0.1:0", mtls, &p_mtls));
    OK(plexus_server_add_listener(f.server, "127.0.0.1:0", optional, &p_opt));
    EXPECT_ERR(plexus_server_add_listener(f.server, "127.0.0.1:0", bad, NULL),
               PLEXUS_ERR_INVALID_ARGUMENT);
    /* The listeners copied what they need. */
    plexus_server_tls_free(tls);
    plexus_server_tls_free(mtls);
    plexus_server_tls_free(optional);
    plexus_server_tls_free(bad);
    OK(plexus_server_start(f.server));
    fx_echo(&f, 0);

    int32_t ports[3] = {p_tls, p_mtls, p_opt};
    for (int port_i = 0; port_i < 3; port_i++) {
        for (int identity = 0; identity < 2; identity++) {
            plexus_channel_options *o = NULL;
            OK(plexus_channel_options_new(&o));
            OK(plexus_channel_options_set_shared(o, false));
            OK(plexus_channel_options_add_tls_ca_pem(o, (const uint8_t *)ca, strlen(ca)));
            OK(plexus_channel_options_set_tls_server_name(o, "localhost"));
            if (identity) {
                OK(plexus_channel_options_set_tls_identity_pem(
                    o, (const uint8_t *)client_cert, strlen(client_cert),
                    (const uint8_t *)client_key, strlen(client_key)));
            }
            char target[64];
            snprintf(target, sizeof target, "127.0.0.1:%d", (int)ports[port_i]);
            const plexus_channel *ch = NULL;
            OK(plexus_channel_new(target, o, &ch));
            plexus_channel_options_free(o);
            int32_t code = -1;
            int32_t rc = echo_unary(ch, M_UNARY, "over TLS", NULL, &code);
            if (port_i == 1 && !identity) {
                /* Required client certificate missing: the handshake fails. */
                CHECK(rc == PLEXUS_ERR_RPC && code != 0);
            } else {
                OK(rc);
                /* The host sees the client's certificate where the listener asked for one. */
                pthread_mutex_lock(&seen.lock);
                if (identity && port_i > 0) {
                    CHECK(seen.cert_len > 0 && seen.cert_first == 0x30);
                } else {
                    CHECK(seen.cert_len == 0);
                }
                pthread_mutex_unlock(&seen.lock);
            }
            plexus_channel_free(ch);
        }
    }
    /* Plaintext to a TLS listener fails too. */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", (int)p_tls);
    const plexus_channel *plain = NULL;
    OK(plexus_channel_new(target, NULL, &plain));
    int32_t code = -1;
    EXPECT(echo_unary(plain, M_UNARY, "plaintext", NULL, &code), PLEXUS_ERR_RPC);
    plexus_channel_free(plain);
    fx_end(&f);
    free(cert);
    free(key);
    free(ca);
    free(client_cert);
    free(client_key);
}

/* Every method kind and the catch-all; what a request event carries; UNIMPLEMENTED without a
 * catch-all; a registration whose queue is shut down answers UNAVAILABLE. */
static void test_methods(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    OK(plexus_server_register_catch_all(f.server, f.cq, &TAG_CATCH_ALL));
    const plexus_cq *closed = NULL;
    OK(plexus_cq_new(&closed));
    OK(plexus_server_register_method(f.server, M_CHILD, PLEXUS_METHOD_UNARY, closed, &TAG_CHILD));
    OK(plexus_cq_shutdown(closed));
    fx_start(&f);
    fx_echo(&f, 0);

    /* Unary: method, metadata, deadline and peer reach the handler. */
    plexus_call_options *o = options_with_x_test("hello metadata");
    OK(plexus_call_options_set_timeout_ms(o, 600000));
    int32_t code = -1;
    OK(echo_unary(f.channel, M_UNARY, "unary", o, &code));
    plexus_call_options_free(o);
    pthread_mutex_lock(&seen.lock);
    CHECK(strcmp(seen.method, M_UNARY) == 0);
    CHECK(strcmp(seen.x_test, "hello metadata") == 0);
    CHECK(seen.deadline > 0 && seen.deadline <= 600000);
    CHECK(strncmp(seen.peer, "ipv4:127.0.0.1:", 15) == 0);
    CHECK(seen.had_message);
    pthread_mutex_unlock(&seen.lock);
    /* No deadline: -1. */
    OK(echo_unary(f.channel, M_UNARY, "no deadline", NULL, &code));
    pthread_mutex_lock(&seen.lock);
    CHECK(seen.deadline == -1 && seen.x_test[0] == '\0');
    pthread_mutex_unlock(&seen.lock);

    /* Server streaming: the request in the event, three responses. */
    check_thrice(f.channel);
    plexus_bytes *req = NULL, *m = NULL;
    const plexus_call *call = NULL;
    plexus_status *status = NULL;

    /* Client streaming: three requests, the last one back. */
    OK(plexus_call_start(f.channel, M_CLIENT_STREAM, NULL, LONG_MS, &call, NULL));
    const char *texts[3] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        req = request_text(texts[i]);
        OK(plexus_call_send(call, req, LONG_MS));
        plexus_bytes_free(req);
    }
    OK(plexus_call_close_send(call, LONG_MS));
    OK(plexus_call_recv(call, LONG_MS, &m));
    CHECK(response_is(m, "three"));
    plexus_bytes_free(m);
    EXPECT(plexus_call_recv(call, LONG_MS, &m), PLEXUS_END_OF_STREAM);
    OK(plexus_call_finish(call, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(call);

    /* Bidi: each request echoed before the next goes. */
    check_bidi_echo(f.channel);

    /* An unregistered path goes to the catch-all, which reads its request with recv. */
    OK(echo_unary(f.channel, M_UNKNOWN, "caught", NULL, &code));
    pthread_mutex_lock(&seen.lock);
    CHECK(strcmp(seen.method, M_UNKNOWN) == 0 && !seen.had_message);
    pthread_mutex_unlock(&seen.lock);

    /* A registration whose queue is shut down: UNAVAILABLE. */
    EXPECT(echo_unary(f.channel, M_CHILD, "nobody", NULL, &code), PLEXUS_ERR_RPC);
    CHECK(code == 14);
    fx_end(&f);
    plexus_cq_free(closed);

    /* Without a catch-all: UNIMPLEMENTED. */
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    fx_echo(&f, 0);
    EXPECT(echo_unary(f.channel, M_UNKNOWN, "nobody", NULL, &code), PLEXUS_ERR_RPC);
    CHECK(code == 12);
    fx_end(&f);
}

/* ---- calls delivered to callbacks on plexus's workers ---- */

/* What the callbacks share with the test: user_data points here. */
typedef struct {
    atomic_int calls;
    const plexus_cq *side;  /* the server-streaming callback's sends report here */
    const plexus_channel *channel;
    pthread_t threads[8];   /* bidi calls handed to threads of their own */
    atomic_int started;
    atomic_int blocked_ok;  /* the waits tried in the unary callback all said WRONG_STATE */
} callback_state;

static int TAG_SIDE_SEND;

/* Answers at once, on the worker; first checks that every wait is refused there. */
static void cb_unary(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    callback_state *st = user_data;
    atomic_fetch_add(&st->calls, 1);
    record(call, request);
    plexus_bytes *m = NULL;
    plexus_event ev;
    plexus_status *status = NULL;
    int refused = plexus_server_call_recv(call, LONG_MS, &m) == PLEXUS_ERR_WRONG_STATE &&
                  plexus_cq_next(st->side, 10, &ev) == PLEXUS_ERR_WRONG_STATE &&
                  plexus_unary(st->channel, M_UNARY, request, NULL, LONG_MS, &m, &status) ==
                      PLEXUS_ERR_WRONG_STATE &&
                  plexus_last_error()[0] != '\0';
    /* A poll of a queue does not wait: allowed. */
    refused = refused && plexus_cq_next(st->side, 0, &ev) == PLEXUS_ERR_TIMEOUT;
    plexus_status_free(status);
    atomic_store(&st->blocked_ok, refused);
    OK(plexus_server_call_finish(call, request, 0, NULL, NULL));
    plexus_bytes_free(request);
    plexus_server_call_free(call);
}

/* Three asynchronous sends and the finish, which waits for them, without leaving the worker. */
static void cb_server_stream(void *user_data, const plexus_server_call *call,
                             plexus_bytes *request) {
    callback_state *st = user_data;
    atomic_fetch_add(&st->calls, 1);
    for (int i = 0; i < 3; i++) {
        OK(plexus_server_call_send_async(call, request, 0, st->side, &TAG_SIDE_SEND));
    }
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    plexus_bytes_free(request);
    plexus_server_call_free(call);
}

static void *serve_bidi_thread(void *arg) {
    serve_echo(&TAG_BIDI, arg, NULL);
    return NULL;
}

/* Hands the call to a thread of its own, which uses the blocking operations. */
static void cb_bidi(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    callback_state *st = user_data;
    atomic_fetch_add(&st->calls, 1);
    CHECK(request == NULL);
    int n = atomic_fetch_add(&st->started, 1);
    CHECK(n < 8);
    CHECK(pthread_create(&st->threads[n], NULL, serve_bidi_thread, (void *)call) == 0);
}

/* The catch-all: NOT_FOUND with a message, at once. */
static void cb_catch_all(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    callback_state *st = user_data;
    atomic_fetch_add(&st->calls, 1);
    CHECK(request == NULL);
    record(call, NULL);
    OK(plexus_server_call_finish(call, NULL, 5, "nothing here", NULL));
    plexus_server_call_free(call);
}

/* Drops the call unanswered. */
static void cb_drop(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    callback_state *st = user_data;
    atomic_fetch_add(&st->calls, 1);
    plexus_bytes_free(request);
    plexus_server_call_free(call);
}

/* Methods and the catch-all served by callbacks: answers given on the worker (finish, _async
 * sends), a call handed to a thread, a call dropped; the waits refused on a worker;
 * registration errors. */
static void test_callbacks(void) {
    fixture f;
    fx_init(&f, NULL);
    callback_state st;
    memset(&st, 0, sizeof st);
    OK(plexus_cq_new(&st.side));
    OK(plexus_server_register_method_callback(f.server, M_UNARY, PLEXUS_METHOD_UNARY, cb_unary,
                                              &st));
    OK(plexus_server_register_method_callback(f.server, M_SERVER_STREAM,
                                              PLEXUS_METHOD_SERVER_STREAMING, cb_server_stream,
                                              &st));
    OK(plexus_server_register_method_callback(f.server, M_BIDI, PLEXUS_METHOD_BIDI_STREAMING,
                                              cb_bidi, &st));
    OK(plexus_server_register_method_callback(f.server, M_CHILD, PLEXUS_METHOD_UNARY, cb_drop,
                                              &st));
    OK(plexus_server_register_catch_all_callback(f.server, cb_catch_all, &st));
    /* Registration errors: as for queues, plus a NULL callback. */
    EXPECT_ERR(plexus_server_register_method_callback(f.server, M_UNARY, PLEXUS_METHOD_UNARY,
                                                      cb_unary, &st),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method(f.server, M_UNARY, PLEXUS_METHOD_UNARY, f.cq,
                                             &TAG_UNARY),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method_callback(f.server, M_CLIENT_STREAM, 9, cb_unary,
                                                      &st),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method_callback(f.server, "no/slash", PLEXUS_METHOD_UNARY,
                                                      cb_unary, &st),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method_callback(f.server, M_CLIENT_STREAM,
                                                      PLEXUS_METHOD_CLIENT_STREAMING, NULL, &st),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method_callback(NULL, M_CLIENT_STREAM,
                                                      PLEXUS_METHOD_CLIENT_STREAMING, cb_unary,
                                                      &st),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_catch_all_callback(f.server, NULL, &st),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_catch_all_callback(f.server, cb_catch_all, &st),
               PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_register_catch_all(f.server, f.cq, &TAG_CATCH_ALL),
               PLEXUS_ERR_WRONG_STATE);
    fx_start(&f);
    st.channel = f.channel;
    EXPECT_ERR(plexus_server_register_method_callback(f.server, M_CLIENT_STREAM,
                                                      PLEXUS_METHOD_CLIENT_STREAMING, cb_unary,
                                                      &st),
               PLEXUS_ERR_WRONG_STATE);

    /* Unary, answered in the callback; the request's facts reach it. */
    plexus_call_options *o = options_with_x_test("to a callback");
    int32_t code = -1;
    OK(echo_unary(f.channel, M_UNARY, "answered on a worker", o, &code));
    plexus_call_options_free(o);
    CHECK(atomic_load(&st.blocked_ok));
    pthread_mutex_lock(&seen.lock);
    CHECK(strcmp(seen.method, M_UNARY) == 0 && strcmp(seen.x_test, "to a callback") == 0);
    CHECK(seen.had_message);
    pthread_mutex_unlock(&seen.lock);

    /* Many at once, from asynchronous calls. */
    static int T_MANY;
    plexus_bytes *req = request_text("many");
    for (int i = 0; i < 32; i++) OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, f.cq, &T_MANY));
    for (int i = 0; i < 32; i++) {
        plexus_event ev = take(f.cq, &T_MANY);
        CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "many"));
        plexus_bytes_free(ev.message);
        plexus_status_free(ev.status);
    }
    plexus_bytes_free(req);

    /* Server streaming: three responses sent asynchronously, then the status. */
    check_thrice(f.channel);
    for (int i = 0; i < 3; i++) {
        plexus_event ev;
        OK(plexus_cq_next(st.side, LONG_MS, &ev));
        CHECK(ev.tag == &TAG_SIDE_SEND && ev.op == PLEXUS_OP_SEND && ev.result == PLEXUS_OK);
    }

    /* Bidi on a thread of the host's. */
    check_bidi_echo(f.channel);

    /* The catch-all's status; a call dropped in its callback is CANCELLED. */
    EXPECT(echo_unary(f.channel, M_UNKNOWN, "anyone?", NULL, &code), PLEXUS_ERR_RPC);
    CHECK(code == 5);
    pthread_mutex_lock(&seen.lock);
    CHECK(strcmp(seen.method, M_UNKNOWN) == 0 && !seen.had_message);
    pthread_mutex_unlock(&seen.lock);
    EXPECT(echo_unary(f.channel, M_CHILD, "dropped", NULL, &code), PLEXUS_ERR_RPC);
    CHECK(code == 1);
    CHECK(atomic_load(&st.calls) == 1 + 32 + 1 + 1 + 1 + 1);

    fx_end(&f);
    for (int i = 0; i < atomic_load(&st.started); i++) CHECK(pthread_join(st.threads[i], NULL) == 0);
    OK(plexus_cq_shutdown(st.side));
    plexus_cq_free(st.side);
}

/* What the slow callback and the test tell each other. */
static struct {
    atomic_int entered, release, shutdown_returned;
} slow;

/* Holds its worker until the test releases it (a test-only breach of "must not wait"). */
static void cb_slow(void *user_data, const plexus_server_call *call, plexus_bytes *request) {
    (void)user_data;
    atomic_store(&slow.entered, 1);
    while (!atomic_load(&slow.release)) sleep_ms(1);
    (void)plexus_server_call_finish(call, request, 0, NULL, NULL);
    plexus_bytes_free(request);
    plexus_server_call_free(call);
}

static void *shutdown_thread(void *arg) {
    OK(plexus_server_shutdown(arg, 0));
    atomic_store(&slow.shutdown_returned, 1);
    return NULL;
}

/* plexus_server_shutdown returns only once no callback of the server runs, so the host may
 * free what user_data points to then; the call itself was cancelled by the shutdown. */
static void test_shutdown_waits_for_callbacks(void) {
    fixture f;
    fx_init(&f, NULL);
    OK(plexus_server_register_method_callback(f.server, M_UNARY, PLEXUS_METHOD_UNARY, cb_slow,
                                              NULL));
    fx_start(&f);
    static int T_SLOW;
    plexus_bytes *req = request_text("slow");
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, f.cq, &T_SLOW));
    plexus_bytes_free(req);
    for (int i = 0; i < LONG_MS && !atomic_load(&slow.entered); i++) sleep_ms(1);
    CHECK(atomic_load(&slow.entered));
    pthread_t stopper;
    CHECK(pthread_create(&stopper, NULL, shutdown_thread, (void *)f.server) == 0);
    /* However long this takes, the shutdown must still be waiting for the callback. */
    sleep_ms(50);
    CHECK(!atomic_load(&slow.shutdown_returned));
    atomic_store(&slow.release, 1);
    CHECK(pthread_join(stopper, NULL) == 0);
    CHECK(atomic_load(&slow.shutdown_returned));
    plexus_event ev = take(f.cq, &T_SLOW);
    CHECK(ev.result == PLEXUS_ERR_RPC || ev.result == PLEXUS_OK);
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    fx_end(&f);
}

/* A google.rpc.Status { code = 5, message = "not here" }, written by hand. */
static const uint8_t DETAILS[] = {0x08, 0x05, 0x12, 0x08, 'n', 'o', 't', ' ', 'h', 'e', 'r', 'e'};

/* Initial and trailing metadata and the status with details reach the client; finish's and
 * send's wrong states. Client and server on one queue, one thread. */
static void test_unary_status_and_metadata(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_CLIENT, T_DONE, T_SIM;

    /* OK, with initial metadata (blocking send) and trailers. */
    plexus_bytes *req = request_text("answer me"), *msg = NULL;
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    plexus_bytes_free(req);
    const plexus_server_call *call = take_call(q, &TAG_UNARY, &msg);
    CHECK(response_is(msg, "answer me"));
    bool cancelled = true;
    OK(plexus_server_call_is_cancelled(call, &cancelled));
    CHECK(!cancelled);
    plexus_metadata *initial = NULL, *trailers = NULL;
    OK(plexus_metadata_new(&initial));
    OK(plexus_metadata_append(initial, "x-initial", "first"));
    OK(plexus_metadata_new(&trailers));
    OK(plexus_metadata_append(trailers, "x-trailer", "last"));
    OK(plexus_server_call_send_initial_metadata(call, initial, LONG_MS));
    EXPECT_ERR(plexus_server_call_finish(call, msg, 17, NULL, NULL), PLEXUS_ERR_INVALID_ARGUMENT);
    OK(plexus_server_call_finish(call, msg, 0, NULL, trailers));
    EXPECT_ERR(plexus_server_call_finish(call, NULL, 0, NULL, NULL), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_call_send(call, msg, 0, LONG_MS), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_call_send_async(call, msg, 0, q, &T_DONE), PLEXUS_ERR_WRONG_STATE);
    plexus_bytes_free(msg);
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    plexus_event ev = take(q, &T_CLIENT);
    CHECK(ev.op == PLEXUS_OP_UNARY && ev.result == PLEXUS_OK && response_is(ev.message, "answer me"));
    const plexus_metadata *got = NULL;
    OK(plexus_status_initial_metadata(ev.status, &got));
    CHECK(md_has(got, "x-initial", "first"));
    OK(plexus_status_trailing_metadata(ev.status, &got));
    CHECK(md_has(got, "x-trailer", "last"));
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_OK && ev.status == NULL);
    /* Asked again once over: reported again. */
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_OK);
    plexus_server_call_free(call);

    /* An error status with a message, details and trailers; initial metadata sent
     * asynchronously first. */
    req = request_text("fail me");
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    plexus_bytes_free(req);
    call = take_call(q, &TAG_UNARY, NULL);
    OK(plexus_server_call_send_initial_metadata_async(call, initial, q, &T_SIM));
    ev = take(q, &T_SIM);
    CHECK(ev.op == PLEXUS_OP_SEND_INITIAL_METADATA && ev.result == PLEXUS_OK);
    /* Status details travel as the one grpc- trailer an application sets. */
    OK(plexus_metadata_append_bin(trailers, "grpc-status-details-bin", DETAILS, sizeof DETAILS));
    OK(plexus_server_call_finish(call, NULL, 5, "not here", trailers));
    ev = take(q, &T_CLIENT);
    CHECK(ev.op == PLEXUS_OP_UNARY && ev.result == PLEXUS_ERR_RPC && ev.message == NULL);
    CHECK(code_of(ev.status) == 5);
    const char *text = NULL;
    size_t len = 0;
    OK(plexus_status_message(ev.status, &text, &len));
    CHECK(len == 8 && memcmp(text, "not here", 8) == 0);
    const uint8_t *details = NULL;
    OK(plexus_status_details(ev.status, &details, &len));
    CHECK(len == sizeof DETAILS && memcmp(details, DETAILS, len) == 0);
    /* The headers went out before the status; plexus's unary client leaves them out of a
     * failed call's status today (a streaming client gets them: below). */
    OK(plexus_status_initial_metadata(ev.status, &got));
    size_t n_initial = 0;
    OK(plexus_metadata_len(got, &n_initial));
    KNOWN_BUG(n_initial > 0, "a failed plexus_unary_async's status has no initial metadata");
    if (n_initial > 0) CHECK(md_has(got, "x-initial", "first"));
    OK(plexus_status_trailing_metadata(ev.status, &got));
    CHECK(md_has(got, "x-trailer", "last"));
    plexus_status_free(ev.status);
    plexus_server_call_free(call);

    /* The same failure seen by a streaming client: headers, then the error status. */
    req = request_text("fail me too");
    const plexus_call *client = NULL;
    OK(plexus_call_start_server_streaming_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    plexus_bytes_free(req);
    call = take_call(q, &TAG_UNARY, NULL);
    ev = take(q, &T_CLIENT);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_OK);
    client = ev.call;
    OK(plexus_server_call_send_initial_metadata(call, initial, LONG_MS));
    OK(plexus_server_call_finish(call, NULL, 5, "not here", trailers));
    plexus_status *status = NULL;
    EXPECT(plexus_call_finish(client, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(code_of(status) == 5);
    OK(plexus_status_initial_metadata(status, &got));
    CHECK(md_has(got, "x-initial", "first"));
    OK(plexus_status_trailing_metadata(status, &got));
    CHECK(md_has(got, "x-trailer", "last"));
    OK(plexus_status_details(status, &details, &len));
    CHECK(len == sizeof DETAILS && memcmp(details, DETAILS, len) == 0);
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);

    /* Initial metadata after the first message: too late. */
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_CLIENT));
    call = take_call(q, &TAG_BIDI, NULL);
    ev = take(q, &T_CLIENT);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_OK);
    client = ev.call;
    msg = request_text("first");
    /* Flag bits this version does not know are refused, not ignored. */
    EXPECT_ERR(plexus_server_call_send(call, msg, 99, LONG_MS), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send_async(call, msg, 2, q, &T_CLIENT),
               PLEXUS_ERR_INVALID_ARGUMENT);
    OK(plexus_server_call_send(call, msg, 0, LONG_MS));
    EXPECT_ERR(plexus_server_call_send_initial_metadata(call, initial, LONG_MS),
               PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_call_send_initial_metadata_async(call, NULL, q, &T_SIM),
               PLEXUS_ERR_WRONG_STATE);
    plexus_bytes_free(msg);
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    status = NULL;
    OK(plexus_call_close_send(client, LONG_MS));
    OK(plexus_call_finish(client, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);
    plexus_metadata_free(initial);
    plexus_metadata_free(trailers);
    fx_end(&f);
}

/* Streams with every operation asynchronous on one queue, client and server, driven by
 * poll() on the queue's fd from one thread. */
static void test_async_streams(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_CSEND, T_CRECV, T_CCLOSE, T_CFIN, T_CMD, T_SRECV, T_SSEND, T_SIM, T_DONE;

    /* Bidi. */
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    const plexus_server_call *call = take_call(q, &TAG_BIDI, NULL);
    plexus_event ev = take(q, &T_START);
    CHECK(ev.op == PLEXUS_OP_START && ev.result == PLEXUS_OK);
    const plexus_call *client = ev.call;
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    plexus_metadata *initial = NULL;
    OK(plexus_metadata_new(&initial));
    OK(plexus_metadata_append(initial, "x-initial", "async"));
    OK(plexus_server_call_send_initial_metadata_async(call, initial, q, &T_SIM));
    plexus_metadata_free(initial); /* copied */
    ev = take(q, &T_SIM);
    CHECK(ev.op == PLEXUS_OP_SEND_INITIAL_METADATA && ev.result == PLEXUS_OK);
    OK(plexus_call_initial_metadata_async(client, q, &T_CMD));
    ev = take(q, &T_CMD);
    CHECK(ev.result == PLEXUS_OK && md_has(ev.metadata, "x-initial", "async"));
    plexus_metadata_free(ev.metadata);
    const char *texts[3] = {"ping", "pong", "pang"};
    for (int i = 0; i < 3; i++) {
        OK(plexus_server_call_recv_async(call, q, &T_SRECV));
        if (i == 0) {
            /* A second receive while one is pending is refused at once. */
            static int T_BUSY;
            EXPECT_ERR(plexus_server_call_recv_async(call, q, &T_BUSY), PLEXUS_ERR_BUSY);
            plexus_bytes *none = NULL;
            EXPECT_ERR(plexus_server_call_recv(call, 0, &none), PLEXUS_ERR_BUSY);
        }
        plexus_bytes *req = request_text(texts[i]);
        OK(plexus_call_send_async(client, req, q, &T_CSEND));
        plexus_bytes_free(req);
        ev = take(q, &T_CSEND);
        CHECK(ev.op == PLEXUS_OP_SEND && ev.result == PLEXUS_OK);
        ev = take(q, &T_SRECV);
        CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_OK && response_is(ev.message, texts[i]));
        /* Odd rounds send without compression; the flag changes nothing visible. */
        OK(plexus_server_call_send_async(call, ev.message, i % 2 ? PLEXUS_SEND_NO_COMPRESS : 0, q,
                                         &T_SSEND));
        plexus_bytes_free(ev.message); /* borrowed by the send */
        OK(plexus_call_recv_async(client, q, &T_CRECV));
        ev = take(q, &T_SSEND);
        CHECK(ev.op == PLEXUS_OP_SEND && ev.result == PLEXUS_OK);
        ev = take(q, &T_CRECV);
        CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_OK && response_is(ev.message, texts[i]));
        plexus_bytes_free(ev.message);
    }
    OK(plexus_call_close_send_async(client, q, &T_CCLOSE));
    ev = take(q, &T_CCLOSE);
    CHECK(ev.result == PLEXUS_OK);
    OK(plexus_server_call_recv_async(call, q, &T_SRECV));
    ev = take(q, &T_SRECV);
    CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_END_OF_STREAM && ev.message == NULL);
    CHECK(!has_come(q, &T_DONE)); /* not over before the status */
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    OK(plexus_call_recv_async(client, q, &T_CRECV));
    ev = take(q, &T_CRECV);
    CHECK(ev.result == PLEXUS_END_OF_STREAM);
    OK(plexus_call_finish_async(client, q, &T_CFIN));
    ev = take(q, &T_CFIN);
    CHECK(ev.op == PLEXUS_OP_FINISH && ev.result == PLEXUS_OK && code_of(ev.status) == 0);
    plexus_status_free(ev.status);
    ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_OK);
    plexus_server_call_free(call);
    plexus_call_free(client);

    /* Server streaming: the request came in the event; two sends, then the status. */
    plexus_bytes *req = request_text("twice"), *msg = NULL;
    OK(plexus_call_start_server_streaming_async(f.channel, M_SERVER_STREAM, req, NULL, q, &T_START));
    plexus_bytes_free(req);
    call = take_call(q, &TAG_SERVER_STREAM, &msg);
    CHECK(msg != NULL && response_is(msg, "twice"));
    ev = take(q, &T_START);
    CHECK(ev.result == PLEXUS_OK);
    client = ev.call;
    OK(plexus_server_call_send_async(call, msg, 0, q, &T_SSEND));
    OK(plexus_server_call_send_async(call, msg, 0, q, &T_SSEND));
    plexus_bytes_free(msg);
    for (int i = 0; i < 2; i++) {
        ev = take(q, &T_SSEND);
        CHECK(ev.result == PLEXUS_OK);
        OK(plexus_call_recv_async(client, q, &T_CRECV));
        ev = take(q, &T_CRECV);
        CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "twice"));
        plexus_bytes_free(ev.message);
    }
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    OK(plexus_call_finish_async(client, q, &T_CFIN));
    ev = take(q, &T_CFIN);
    CHECK(ev.result == PLEXUS_OK);
    plexus_status_free(ev.status);
    plexus_server_call_free(call);
    plexus_call_free(client);

    /* Two sends accepted, then the finish at once: both messages go before the status. */
    req = request_text("queued");
    OK(plexus_call_start_server_streaming_async(f.channel, M_SERVER_STREAM, req, NULL, q, &T_START));
    plexus_bytes_free(req);
    call = take_call(q, &TAG_SERVER_STREAM, &msg);
    ev = take(q, &T_START);
    client = ev.call;
    OK(plexus_server_call_send_async(call, msg, 0, q, &T_SSEND));
    OK(plexus_server_call_send_async(call, msg, 0, q, &T_SSEND));
    plexus_bytes_free(msg);
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    int sends_ok = 0, got = 0;
    for (int i = 0; i < 2; i++) {
        ev = take(q, &T_SSEND);
        sends_ok += ev.result == PLEXUS_OK;
    }
    plexus_bytes *m = NULL;
    while (plexus_call_recv(client, LONG_MS, &m) == PLEXUS_OK) {
        CHECK(response_is(m, "queued"));
        got++;
        plexus_bytes_free(m);
    }
    plexus_status *st = NULL;
    int32_t finished = plexus_call_finish(client, LONG_MS, &st);
    plexus_status_free(st);
    CHECK(sends_ok == 2 && got == 2 && finished == PLEXUS_OK);
    plexus_server_call_free(call);
    plexus_call_free(client);

    /* Client streaming: the server reads until the half-close, then answers. */
    OK(plexus_call_start_async(f.channel, M_CLIENT_STREAM, NULL, q, &T_START));
    call = take_call(q, &TAG_CLIENT_STREAM, NULL);
    ev = take(q, &T_START);
    client = ev.call;
    for (int i = 0; i < 3; i++) {
        req = request_text(texts[i]);
        OK(plexus_call_send_async(client, req, q, &T_CSEND));
        plexus_bytes_free(req);
        ev = take(q, &T_CSEND);
        CHECK(ev.result == PLEXUS_OK);
    }
    OK(plexus_call_close_send_async(client, q, &T_CCLOSE));
    int received = 0;
    for (;;) {
        OK(plexus_server_call_recv_async(call, q, &T_SRECV));
        ev = take(q, &T_SRECV);
        if (ev.result == PLEXUS_END_OF_STREAM) break;
        CHECK(ev.result == PLEXUS_OK && response_is(ev.message, texts[received]));
        received++;
        plexus_bytes_free(ev.message);
    }
    CHECK(received == 3);
    ev = take(q, &T_CCLOSE);
    CHECK(ev.result == PLEXUS_OK);
    msg = request_text("all three");
    OK(plexus_server_call_finish(call, msg, 0, NULL, NULL));
    plexus_bytes_free(msg);
    OK(plexus_call_recv_async(client, q, &T_CRECV));
    ev = take(q, &T_CRECV);
    CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "all three"));
    plexus_bytes_free(ev.message);
    OK(plexus_call_finish_async(client, q, &T_CFIN));
    ev = take(q, &T_CFIN);
    CHECK(ev.result == PLEXUS_OK);
    plexus_status_free(ev.status);
    plexus_server_call_free(call);
    plexus_call_free(client);
    fx_end(&f);
}

#define STREAM_THREADS 4
#define STREAM_MESSAGES 20

static void *bidi_client(void *arg) {
    const plexus_channel *ch = arg;
    const plexus_call *call = NULL;
    OK(plexus_call_start(ch, M_BIDI, NULL, LONG_MS, &call, NULL));
    for (int i = 0; i < STREAM_MESSAGES; i++) {
        char text[32];
        snprintf(text, sizeof text, "message %d", i);
        plexus_bytes *req = request_text(text), *m = NULL;
        OK(plexus_call_send(call, req, LONG_MS));
        plexus_bytes_free(req);
        OK(plexus_call_recv(call, LONG_MS, &m));
        CHECK(response_is(m, text));
        plexus_bytes_free(m);
    }
    OK(plexus_call_close_send(call, LONG_MS));
    plexus_status *status = NULL;
    OK(plexus_call_finish(call, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(call);
    return NULL;
}

/* Blocking server operations: several streams at once, each served on its own thread; a
 * receive that times out loses nothing. */
static void test_blocking_streams(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    fx_echo(&f, 1);
    pthread_t clients[STREAM_THREADS];
    for (int i = 0; i < STREAM_THREADS; i++) {
        CHECK(pthread_create(&clients[i], NULL, bidi_client, (void *)f.channel) == 0);
    }
    for (int i = 0; i < STREAM_THREADS; i++) CHECK(pthread_join(clients[i], NULL) == 0);
    fx_end(&f);

    /* The test thread serves one call with blocking operations itself. */
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    static int T_START;
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, f.cq, &T_START));
    const plexus_server_call *call = take_call(f.cq, &TAG_BIDI, NULL);
    plexus_event ev = take(f.cq, &T_START);
    const plexus_call *client = ev.call;
    plexus_bytes *m = NULL;
    EXPECT_ERR(plexus_server_call_recv(call, 1, &m), PLEXUS_ERR_TIMEOUT);
    plexus_bytes *req = request_text("after a timeout");
    OK(plexus_call_send(client, req, LONG_MS));
    OK(plexus_server_call_recv(call, LONG_MS, &m));
    plexus_bytes_free(req);
    CHECK(response_is(m, "after a timeout"));
    OK(plexus_server_call_send_initial_metadata(call, NULL, LONG_MS));
    OK(plexus_server_call_send(call, m, 0, LONG_MS));
    plexus_bytes_free(m);
    OK(plexus_call_recv(client, LONG_MS, &m));
    CHECK(response_is(m, "after a timeout"));
    plexus_bytes_free(m);
    OK(plexus_call_close_send(client, LONG_MS));
    EXPECT(plexus_server_call_recv(call, LONG_MS, &m), PLEXUS_END_OF_STREAM);
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    plexus_status *status = NULL;
    OK(plexus_call_finish(client, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);
    fx_end(&f);
}

/* The client cancels: SERVER_DONE reports PLEXUS_ERR_RPC with CANCELLED; sends fail, finish
 * still succeeds. The server cancels, or frees a call it did not finish: the client sees
 * CANCELLED. */
static void test_cancellation(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_DONE, T_CLIENT;

    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    const plexus_server_call *call = take_call(q, &TAG_BIDI, NULL);
    plexus_event ev = take(q, &T_START);
    const plexus_call *client = ev.call;
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    bool cancelled = true;
    OK(plexus_server_call_is_cancelled(call, &cancelled));
    CHECK(!cancelled);
    CHECK(!has_come(q, &T_DONE));
    OK(plexus_call_cancel(client));
    ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_ERR_RPC && ev.status != NULL);
    CHECK(code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    OK(plexus_server_call_is_cancelled(call, &cancelled));
    CHECK(cancelled);
    plexus_bytes *msg = request_text("too late"), *m = NULL;
    EXPECT_ERR(plexus_server_call_send(call, msg, 0, LONG_MS), PLEXUS_ERR_RPC);
    int32_t rc = plexus_server_call_recv(call, LONG_MS, &m);
    CHECK(rc == PLEXUS_END_OF_STREAM || rc == PLEXUS_ERR_RPC);
    OK(plexus_server_call_finish(call, msg, 0, NULL, NULL));
    plexus_bytes_free(msg);
    plexus_server_call_free(call);
    plexus_call_free(client);

    /* The server cancels (twice: idempotent). */
    msg = request_text("cancel me");
    OK(plexus_unary_async(f.channel, M_UNARY, msg, NULL, q, &T_CLIENT));
    call = take_call(q, &TAG_UNARY, NULL);
    OK(plexus_server_call_cancel(call));
    OK(plexus_server_call_cancel(call));
    ev = take(q, &T_CLIENT);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    plexus_server_call_free(call);

    /* A call freed unfinished. */
    OK(plexus_unary_async(f.channel, M_UNARY, msg, NULL, q, &T_CLIENT));
    call = take_call(q, &TAG_UNARY, NULL);
    plexus_server_call_free(call);
    ev = take(q, &T_CLIENT);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    plexus_bytes_free(msg);
    fx_end(&f);
}

/* The client's deadline passes with the call unanswered. The call is registered as client
 * streaming so that it reaches the host at its headers; should the machine stall past the
 * deadline before that, the host may never see it, so the host's checks run when it does. */
static void test_deadline(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_CLIENT, T_DONE;
    plexus_call_options *o = NULL;
    OK(plexus_call_options_new(&o));
    OK(plexus_call_options_set_timeout_ms(o, 1000));
    plexus_bytes *req = request_text("slow");
    OK(plexus_unary_async(f.channel, M_CLIENT_STREAM, req, o, q, &T_CLIENT));
    plexus_bytes_free(req);
    plexus_call_options_free(o);
    const plexus_server_call *call = NULL;
    for (int client_done = 0; !client_done;) {
        plexus_event ev = wait_event(q);
        if (ev.tag == &TAG_CLIENT_STREAM) {
            call = ev.server_call;
            int64_t remaining = -5;
            OK(plexus_server_call_deadline(call, &remaining));
            CHECK(remaining >= 0 && remaining <= 1000);
            OK(plexus_server_call_done_async(call, q, &T_DONE));
        } else if (ev.tag == &T_CLIENT) {
            CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 4);
            plexus_status_free(ev.status);
            client_done = 1;
        } else {
            CHECK(stashed < STASH);
            stash[stashed++] = ev;
        }
    }
    if (call == NULL && has_come(q, &TAG_CLIENT_STREAM)) {
        call = take_call(q, &TAG_CLIENT_STREAM, NULL);
        OK(plexus_server_call_done_async(call, q, &T_DONE));
    }
    if (call == NULL) {
        printf("  (the deadline passed before the call reached the host)\n");
        fx_end(&f);
        return;
    }
    plexus_event ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_ERR_RPC);
    /* The server's timer or the client's RST_STREAM, whichever came first. */
    int32_t code = code_of(ev.status);
    CHECK(code == 4 || code == 1);
    plexus_status_free(ev.status);
    /* Over by the server's own timer: the deadline is behind it. (The client's RST_STREAM
     * may come first: its clock started earlier.) */
    int64_t remaining = -5;
    OK(plexus_server_call_deadline(call, &remaining));
    CHECK(remaining >= 0 && remaining <= 1000);
    if (code == 4) CHECK(remaining == 0);
    bool cancelled = false;
    OK(plexus_server_call_is_cancelled(call, &cancelled));
    CHECK(cancelled);
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    plexus_server_call_free(call);
    fx_end(&f);
}

/* A request above the server's max receive size: RESOURCE_EXHAUSTED for the client, and the
 * host's receive reports it. */
static void test_oversize(void) {
    plexus_server_options *o = NULL;
    OK(plexus_server_options_new(&o));
    OK(plexus_server_options_set_max_receive_message_size(o, 1024));
    fixture f;
    fx_init(&f, o);
    plexus_server_options_free(o); /* copied */
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_SRECV;
    static uint8_t big[4096];
    echo_request r;
    memset(&r, 0, sizeof r);
    r.message = "big";
    r.payload = big;
    r.payload_len = sizeof big;
    plexus_bytes *req = encode_request(&r), *resp = NULL;

    /* Unary: refused before the host sees it. */
    plexus_status *status = NULL;
    EXPECT(plexus_unary(f.channel, M_UNARY, req, NULL, LONG_MS, &resp, &status), PLEXUS_ERR_RPC);
    CHECK(code_of(status) == 8);
    plexus_status_free(status);

    /* Streaming, asynchronous receive: the event says why. */
    for (int blocking = 0; blocking < 2; blocking++) {
        OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
        const plexus_server_call *call = take_call(q, &TAG_BIDI, NULL);
        plexus_event ev = take(q, &T_START);
        const plexus_call *client = ev.call;
        int32_t sent = plexus_call_send(client, req, LONG_MS);
        CHECK(sent == PLEXUS_OK || sent == PLEXUS_ERR_RPC); /* the answer may beat the send */
        if (blocking) {
            plexus_bytes *m = NULL;
            EXPECT_ERR(plexus_server_call_recv(call, LONG_MS, &m), PLEXUS_ERR_RPC);
            CHECK(strstr(plexus_last_error(), "RESOURCE_EXHAUSTED") != NULL);
        } else {
            OK(plexus_server_call_recv_async(call, q, &T_SRECV));
            ev = take(q, &T_SRECV);
            CHECK(ev.op == PLEXUS_OP_RECV && ev.result == PLEXUS_ERR_RPC && ev.message == NULL);
            CHECK(code_of(ev.status) == 8);
            plexus_status_free(ev.status);
        }
        EXPECT(plexus_call_finish(client, LONG_MS, &status), PLEXUS_ERR_RPC);
        CHECK(code_of(status) == 8);
        plexus_status_free(status);
        /* plexus ended the call already; finishing it changes nothing. */
        OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
        plexus_call_free(client);
        plexus_server_call_free(call);
    }
    plexus_bytes_free(req);
    fx_end(&f);
}

/* max_concurrent_calls: the call beyond the limit gets RESOURCE_EXHAUSTED without reaching the
 * host; once a call is over, a new one gets in. */
static void test_max_concurrent_calls(void) {
    plexus_server_options *o = NULL;
    OK(plexus_server_options_new(&o));
    OK(plexus_server_options_set_max_concurrent_calls(o, 2));
    fixture f;
    fx_init(&f, o);
    plexus_server_options_free(o);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_CLIENT, T_DONE;
    const plexus_server_call *calls[2];
    const plexus_call *clients[2];
    for (int i = 0; i < 2; i++) {
        OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
        calls[i] = take_call(q, &TAG_BIDI, NULL);
        plexus_event ev = take(q, &T_START);
        clients[i] = ev.call;
    }
    plexus_bytes *req = request_text("one too many");
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    plexus_event ev = take(q, &T_CLIENT);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 8);
    const char *text = NULL;
    OK(plexus_status_message(ev.status, &text, NULL));
    CHECK(strstr(text, "Concurrent RPC limit exceeded!") != NULL);
    plexus_status_free(ev.status);
    CHECK(!has_come(q, &TAG_UNARY));

    /* One call ends; the next call gets in (the slot may come back just after SERVER_DONE,
     * so a refusal is retried, a bounded number of times). */
    OK(plexus_server_call_done_async(calls[0], q, &T_DONE));
    OK(plexus_server_call_finish(calls[0], NULL, 0, NULL, NULL));
    plexus_status *status = NULL;
    OK(plexus_call_close_send(clients[0], LONG_MS));
    OK(plexus_call_finish(clients[0], LONG_MS, &status));
    plexus_status_free(status);
    ev = take(q, &T_DONE);
    CHECK(ev.result == PLEXUS_OK);
    int served = 0;
    for (int attempt = 0; attempt < 1000 && !served; attempt++) {
        OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
        ev = wait_event(q);
        if (ev.tag == &TAG_UNARY) {
            OK(plexus_server_call_finish(ev.server_call, ev.message, 0, NULL, NULL));
            plexus_bytes_free(ev.message);
            plexus_server_call_free(ev.server_call);
            ev = take(q, &T_CLIENT);
            CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "one too many"));
            plexus_bytes_free(ev.message);
            served = 1;
        } else {
            CHECK(ev.tag == &T_CLIENT && ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 8);
            sleep_ms(10);
        }
        plexus_status_free(ev.status);
    }
    CHECK(served);
    plexus_bytes_free(req);
    for (int i = 0; i < 2; i++) plexus_call_free(clients[i]);
    for (int i = 0; i < 2; i++) plexus_server_call_free(calls[i]);
    fx_end(&f);
}

/* Graceful shutdown lets the call in flight finish; a forced one cancels it after the grace;
 * a server freed while running is shut down. */
static void test_shutdown(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_SHUT, T_CLIENT, T_DONE;

    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    const plexus_server_call *call = take_call(q, &TAG_BIDI, NULL);
    plexus_event ev = take(q, &T_START);
    const plexus_call *client = ev.call;
    OK(plexus_server_shutdown_async(f.server, -1, q, &T_SHUT));
    /* A call sent before the client saw the GOAWAY is still served; one sent after it is
     * refused with UNAVAILABLE. Which of the two this one is depends on timing. */
    plexus_bytes *req = request_text("after shutdown"), *m = NULL;
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    ev = take_either(q, &T_CLIENT, &TAG_UNARY);
    if (ev.tag == &TAG_UNARY) {
        OK(plexus_server_call_finish(ev.server_call, ev.message, 0, NULL, NULL));
        plexus_bytes_free(ev.message);
        plexus_server_call_free(ev.server_call);
        ev = take(q, &T_CLIENT);
        CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "after shutdown"));
        plexus_bytes_free(ev.message);
    } else {
        CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 14);
    }
    plexus_status_free(ev.status);
    EXPECT_ERR(plexus_server_add_listener(f.server, "127.0.0.1:0", NULL, NULL),
               PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_start(f.server), PLEXUS_ERR_WRONG_STATE);
    /* The call in flight goes on. */
    OK(plexus_call_send(client, req, LONG_MS));
    OK(plexus_server_call_recv(call, LONG_MS, &m));
    OK(plexus_server_call_send(call, m, 0, LONG_MS));
    plexus_bytes_free(m);
    OK(plexus_call_recv(client, LONG_MS, &m));
    CHECK(response_is(m, "after shutdown"));
    plexus_bytes_free(m);
    CHECK(!has_come(q, &T_SHUT)); /* not while a call is in flight */
    OK(plexus_call_close_send(client, LONG_MS));
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL));
    plexus_status *status = NULL;
    OK(plexus_call_finish(client, LONG_MS, &status));
    plexus_status_free(status);
    ev = take(q, &T_SHUT);
    CHECK(ev.op == PLEXUS_OP_SERVER_SHUTDOWN && ev.result == PLEXUS_OK);
    OK(plexus_server_shutdown(f.server, 0)); /* idempotent */
    /* Shut down: nothing gets in, on any connection. */
    const plexus_channel *fresh = NULL;
    OK(plexus_channel_new(f.target, NULL, &fresh));
    int32_t refused = -1;
    EXPECT(echo_unary(fresh, M_UNARY, "too late", NULL, &refused), PLEXUS_ERR_RPC);
    CHECK(refused == 14);
    CHECK(!has_come(q, &TAG_UNARY));
    plexus_channel_free(fresh);
    plexus_call_free(client);
    plexus_server_call_free(call);
    plexus_bytes_free(req);
    fx_end(&f);

    /* Forced: the grace passes, the call is cancelled. */
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    q = f.cq;
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    call = take_call(q, &TAG_BIDI, NULL);
    ev = take(q, &T_START);
    client = ev.call;
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    OK(plexus_server_shutdown(f.server, 50));
    ev = take(q, &T_DONE);
    CHECK(ev.op == PLEXUS_OP_SERVER_DONE && ev.result == PLEXUS_ERR_RPC);
    int32_t code = code_of(ev.status);
    CHECK(code == 14 || code == 1);
    plexus_status_free(ev.status);
    req = request_text("gone");
    EXPECT_ERR(plexus_server_call_send(call, req, 0, LONG_MS), PLEXUS_ERR_RPC);
    plexus_bytes_free(req);
    EXPECT(plexus_call_finish(client, LONG_MS, &status), PLEXUS_ERR_RPC);
    CHECK(code_of(status) != 0);
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);
    fx_end(&f);

    /* Freed while running, with a call in flight. */
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    q = f.cq;
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    call = take_call(q, &TAG_BIDI, NULL);
    ev = take(q, &T_START);
    client = ev.call;
    OK(plexus_server_call_done_async(call, q, &T_DONE));
    plexus_server_free(f.server);
    ev = take(q, &T_DONE);
    CHECK(ev.result == PLEXUS_ERR_RPC);
    plexus_status_free(ev.status);
    EXPECT(plexus_call_finish(client, LONG_MS, &status), PLEXUS_ERR_RPC);
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);
    plexus_channel_free(f.channel);
    OK(plexus_cq_shutdown(f.cq));
    drop_stash();
    plexus_cq_free(f.cq);
}

static atomic_int released;

static void count_release(void *context) {
    atomic_fetch_add(&released, 1);
    free(context);
}

/* Waits (up to LONG_MS) for `released` to reach `want`; the check is on the value only. */
static int released_reaches(int want) {
    for (int waited = 0; waited < LONG_MS && atomic_load(&released) < want; waited++) sleep_ms(1);
    return atomic_load(&released) == want;
}

/* A wrapped response of `payload` bytes with message `text`; its memory is released through
 * count_release. */
static plexus_bytes *wrapped_response(const char *text, size_t payload) {
    size_t cap = payload + strlen(text) + 32;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    size_t len = 0;
    buf[len++] = 0x0a; /* 1: message */
    buf[len++] = (uint8_t)strlen(text);
    memcpy(buf + len, text, strlen(text));
    len += strlen(text);
    buf[len++] = 0x1a; /* 3: payload */
    size_t n = payload;
    while (n >= 0x80) {
        buf[len++] = (uint8_t)(n | 0x80);
        n >>= 7;
    }
    buf[len++] = (uint8_t)n;
    memset(buf + len, 'z', payload);
    len += payload;
    plexus_bytes *out = NULL;
    OK(plexus_bytes_wrap(buf, len, count_release, buf, &out));
    return out;
}

/* Responses sent from plexus_bytes_wrap memory: read by the client intact, released exactly
 * once, after the buffer is freed and the last send using it is done. */
static void test_zero_copy(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_CLIENT, T_START;
    atomic_store(&released, 0);

    plexus_bytes *req = request_text("wrap");
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, q, &T_CLIENT));
    plexus_bytes_free(req);
    const plexus_server_call *call = take_call(q, &TAG_UNARY, NULL);
    plexus_bytes *resp = wrapped_response("wrapped", 100000);
    OK(plexus_server_call_finish(call, resp, 0, NULL, NULL));
    plexus_bytes_free(resp);
    plexus_event ev = take(q, &T_CLIENT);
    CHECK(ev.result == PLEXUS_OK);
    echo_response r = decode_response(ev.message);
    CHECK(r.message_len == 7 && memcmp(r.message, "wrapped", 7) == 0 && r.payload_len == 100000);
    CHECK(r.payload[0] == 'z' && r.payload[99999] == 'z');
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    plexus_server_call_free(call);
    CHECK(released_reaches(1));

    /* One wrapped buffer sent twice on a stream, then freed. */
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, q, &T_START));
    call = take_call(q, &TAG_BIDI, NULL);
    ev = take(q, &T_START);
    const plexus_call *client = ev.call;
    resp = wrapped_response("twice", 1 << 20);
    /* Asynchronous: a megabyte waits for the client's flow-control window, which this thread
     * opens by reading. */
    static int T_SEND;
    OK(plexus_server_call_send_async(call, resp, 0, q, &T_SEND));
    OK(plexus_server_call_send_async(call, resp, 0, q, &T_SEND));
    plexus_bytes_free(resp);
    OK(plexus_server_call_finish(call, NULL, 0, NULL, NULL)); /* goes after both */
    for (int i = 0; i < 2; i++) {
        plexus_bytes *m = NULL;
        OK(plexus_call_recv(client, LONG_MS, &m));
        r = decode_response(m);
        CHECK(r.message_len == 5 && r.payload_len == (1u << 20) && r.payload[(1u << 20) - 1] == 'z');
        plexus_bytes_free(m);
    }
    for (int i = 0; i < 2; i++) {
        ev = take(q, &T_SEND);
        CHECK(ev.op == PLEXUS_OP_SEND && ev.result == PLEXUS_OK);
    }
    plexus_status *status = NULL;
    OK(plexus_call_finish(client, LONG_MS, &status));
    plexus_status_free(status);
    plexus_call_free(client);
    plexus_server_call_free(call);
    CHECK(released_reaches(2));
    fx_end(&f);
    CHECK(atomic_load(&released) == 2);
}

/* plexus_call_options_set_parent: a child call made for a server call gets its deadline, and
 * is cancelled with it; children on this server and on the Rust echo server. */
static void test_parent(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_register(&f, M_CHILD, PLEXUS_METHOD_UNARY, &TAG_CHILD);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_START, T_CHILD, T_PEER, T_CDONE, T_PDONE;
    const plexus_channel *peer = NULL;
    OK(plexus_channel_new(test_target(), NULL, &peer));

    plexus_call_options *o = NULL;
    OK(plexus_call_options_new(&o));
    OK(plexus_call_options_set_timeout_ms(o, 600000));
    OK(plexus_call_start_async(f.channel, M_BIDI, o, q, &T_START));
    plexus_call_options_free(o);
    const plexus_server_call *parent = take_call(q, &TAG_BIDI, NULL);
    plexus_event ev = take(q, &T_START);
    const plexus_call *client = ev.call;
    OK(plexus_server_call_done_async(parent, q, &T_PDONE));

    plexus_call_options *child_options = NULL;
    OK(plexus_call_options_new(&child_options));
    OK(plexus_call_options_set_parent(child_options, parent));
    plexus_bytes *req = request_text("child");
    OK(plexus_unary_async(f.channel, M_CHILD, req, child_options, q, &T_CHILD));
    plexus_bytes_free(req);
    echo_request slow;
    memset(&slow, 0, sizeof slow);
    slow.message = "never answered";
    slow.delay_ms = 600000;
    req = encode_request(&slow);
    OK(plexus_unary_async(peer, UNARY, req, child_options, q, &T_PEER));
    plexus_bytes_free(req);
    plexus_call_options_free(child_options);

    const plexus_server_call *child = take_call(q, &TAG_CHILD, NULL);
    int64_t remaining = -1;
    OK(plexus_server_call_deadline(child, &remaining));
    CHECK(remaining > 0 && remaining <= 600000);
    OK(plexus_server_call_done_async(child, q, &T_CDONE));

    /* The parent's client cancels: the parent is over, and so are its children. */
    OK(plexus_call_cancel(client));
    ev = take(q, &T_PDONE);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    ev = take(q, &T_CHILD);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    ev = take(q, &T_PEER);
    CHECK(ev.result == PLEXUS_ERR_RPC && code_of(ev.status) == 1);
    plexus_status_free(ev.status);
    ev = take(q, &T_CDONE);
    CHECK(ev.result == PLEXUS_ERR_RPC);
    plexus_status_free(ev.status);
    plexus_server_call_free(child);
    plexus_server_call_free(parent);
    plexus_call_free(client);
    plexus_channel_free(peer);
    fx_end(&f);
}

/* Every server option setter; compression by option and per call. */
static void test_options(void) {
    plexus_server_options *o = NULL;
    OK(plexus_server_options_new(&o));
    OK(plexus_server_options_set_max_concurrent_calls(o, 0));
    OK(plexus_server_options_set_max_concurrent_streams(o, 50));
    OK(plexus_server_options_set_max_receive_message_size(o, 8 << 20));
    OK(plexus_server_options_set_max_send_message_size(o, 8 << 20));
    OK(plexus_server_options_set_initial_stream_window_size(o, 1 << 20));
    OK(plexus_server_options_set_initial_connection_window_size(o, 2 << 20));
    OK(plexus_server_options_set_adaptive_window(o, true));
    OK(plexus_server_options_set_max_frame_size(o, 32768));
    OK(plexus_server_options_set_keepalive_time_ms(o, 600000));
    OK(plexus_server_options_set_keepalive_timeout_ms(o, 60000));
    OK(plexus_server_options_set_keepalive_min_ping_interval_ms(o, 1000));
    OK(plexus_server_options_set_keepalive_permit_without_calls(o, true));
    OK(plexus_server_options_set_handshake_timeout_ms(o, 60000));
    OK(plexus_server_options_set_max_header_list_size(o, 32768));
    OK(plexus_server_options_set_max_connection_idle_ms(o, -1));
    OK(plexus_server_options_set_max_connection_age_ms(o, -1));
    OK(plexus_server_options_set_max_connection_age_grace_ms(o, -1));
    EXPECT_ERR(plexus_server_options_set_compression(o, "zstd"), PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_compression(o, "\xff"), PLEXUS_ERR_INVALID_UTF8);
    OK(plexus_server_options_set_compression(o, "gzip"));
    fixture f;
    fx_init(&f, o);
    plexus_server_options_free(o);
    register_all(&f);
    fx_start(&f);
    const plexus_cq *q = f.cq;
    static int T_CLIENT;
    plexus_call_options *gzip = NULL;
    OK(plexus_call_options_new(&gzip));
    OK(plexus_call_options_set_compression(gzip, "gzip"));
    for (int i = 0; i < 3; i++) {
        plexus_bytes *req = request_text("compressed"), *msg = NULL;
        /* The first request goes compressed; the host can tell. */
        OK(plexus_unary_async(f.channel, M_UNARY, req, i == 0 ? gzip : NULL, q, &T_CLIENT));
        plexus_bytes_free(req);
        const plexus_server_call *call = take_call(q, &TAG_UNARY, &msg);
        bool compressed = i != 0;
        OK(plexus_server_call_last_message_compressed(call, &compressed));
        CHECK(compressed == (i == 0));
        if (i == 1) OK(plexus_server_call_set_compression(call, "deflate"));
        if (i == 2) OK(plexus_server_call_set_compression(call, "identity"));
        EXPECT_ERR(plexus_server_call_set_compression(call, "zstd"), PLEXUS_ERR_INVALID_ARGUMENT);
        OK(plexus_server_call_finish(call, msg, 0, NULL, NULL));
        plexus_bytes_free(msg);
        plexus_server_call_free(call);
        plexus_event ev = take(q, &T_CLIENT);
        CHECK(ev.result == PLEXUS_OK && response_is(ev.message, "compressed"));
        plexus_bytes_free(ev.message);
        plexus_status_free(ev.status);
    }
    plexus_call_options_free(gzip);
    fx_end(&f);
}

/* NULL arguments and wrong states: the documented codes, with an error text. */
static void test_bad_arguments(void) {
    plexus_server_options *o = NULL;
    EXPECT_ERR(plexus_server_options_new(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_concurrent_calls(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_concurrent_streams(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_receive_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_send_message_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_initial_stream_window_size(NULL, 1 << 16),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_initial_connection_window_size(NULL, 1 << 16),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_adaptive_window(NULL, true), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_frame_size(NULL, 16384), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_keepalive_time_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_keepalive_timeout_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_keepalive_min_ping_interval_ms(NULL, 1),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_keepalive_permit_without_calls(NULL, true),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_handshake_timeout_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_header_list_size(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_connection_idle_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_connection_age_ms(NULL, 1), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_max_connection_age_grace_ms(NULL, 1),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_options_set_compression(NULL, "gzip"), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_server_options_new(&o));
    EXPECT_ERR(plexus_server_options_set_compression(o, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    plexus_server_options_free(o);
    plexus_server_options_free(NULL);

    plexus_server_tls *tls = NULL;
    EXPECT_ERR(plexus_server_tls_new(NULL, "key", &tls), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_tls_new("cert", NULL, &tls), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_tls_new("cert", "key", NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_tls_set_client_ca_pem(NULL, "ca", true), PLEXUS_ERR_NULL_ARGUMENT);
    plexus_server_tls_free(NULL);

    EXPECT_ERR(plexus_server_new(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    const plexus_server *server = NULL;
    const plexus_cq *q = NULL;
    OK(plexus_cq_new(&q));
    OK(plexus_server_new(NULL, &server));
    static int tag;
    EXPECT_ERR(plexus_server_register_method(NULL, M_UNARY, PLEXUS_METHOD_UNARY, q, &tag),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method(server, NULL, PLEXUS_METHOD_UNARY, q, &tag),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method(server, M_UNARY, PLEXUS_METHOD_UNARY, NULL, &tag),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method(server, "no slash", PLEXUS_METHOD_UNARY, q, &tag),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_method(server, "/\xff/x", PLEXUS_METHOD_UNARY, q, &tag),
               PLEXUS_ERR_INVALID_UTF8);
    EXPECT_ERR(plexus_server_register_method(server, M_UNARY, (plexus_method_kind)7, q, &tag),
               PLEXUS_ERR_INVALID_ARGUMENT);
    OK(plexus_server_register_method(server, M_UNARY, PLEXUS_METHOD_UNARY, q, &tag));
    EXPECT_ERR(plexus_server_register_method(server, M_UNARY, PLEXUS_METHOD_BIDI_STREAMING, q, &tag),
               PLEXUS_ERR_INVALID_ARGUMENT);
    EXPECT_ERR(plexus_server_register_catch_all(NULL, q, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_register_catch_all(server, NULL, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_server_register_catch_all(server, q, &tag));
    EXPECT_ERR(plexus_server_register_catch_all(server, q, &tag), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_add_listener(NULL, "127.0.0.1:0", NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_add_listener(server, NULL, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_start(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_server_start(server));
    EXPECT_ERR(plexus_server_start(server), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_register_method(server, M_BIDI, PLEXUS_METHOD_BIDI_STREAMING, q, &tag),
               PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_register_catch_all(server, q, &tag), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_shutdown(NULL, 0), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_shutdown_async(NULL, 0, q, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_shutdown_async(server, 0, NULL, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_server_shutdown(server, 0));
    OK(plexus_server_shutdown(server, 0));
    EXPECT_ERR(plexus_server_start(server), PLEXUS_ERR_WRONG_STATE);
    EXPECT_ERR(plexus_server_add_listener(server, "127.0.0.1:0", NULL, NULL), PLEXUS_ERR_WRONG_STATE);
    plexus_server_free(server);
    plexus_server_free(NULL);

    /* Server call functions with NULL. */
    const char *s = NULL;
    const plexus_metadata *md = NULL;
    int64_t ms = 0;
    bool b = false;
    plexus_bytes *m = NULL;
    EXPECT_ERR(plexus_server_call_method(NULL, &s), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_peer(NULL, &s), PLEXUS_ERR_NULL_ARGUMENT);
    const uint8_t *der = NULL;
    size_t der_len = 0;
    EXPECT_ERR(plexus_server_call_peer_certificate(NULL, &der, &der_len), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_last_message_compressed(NULL, &b), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_metadata(NULL, &md), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_deadline(NULL, &ms), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_is_cancelled(NULL, &b), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_set_compression(NULL, "gzip"), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_recv(NULL, 0, &m), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_recv_async(NULL, q, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send_initial_metadata(NULL, NULL, 0), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send_initial_metadata_async(NULL, NULL, q, &tag),
               PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send(NULL, NULL, 0, 0), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send_async(NULL, NULL, 0, q, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_finish(NULL, NULL, 0, NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_cancel(NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_done_async(NULL, q, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    plexus_server_call_free(NULL);
    plexus_call_options *co = NULL;
    OK(plexus_call_options_new(&co));
    EXPECT_ERR(plexus_call_options_set_parent(NULL, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    OK(plexus_call_options_set_parent(co, NULL)); /* NULL clears it */
    plexus_call_options_free(co);

    /* NULL out-parameters on a live call. */
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    static int T_CLIENT;
    plexus_bytes *req = request_text("x");
    OK(plexus_unary_async(f.channel, M_UNARY, req, NULL, f.cq, &T_CLIENT));
    const plexus_server_call *call = take_call(f.cq, &TAG_UNARY, NULL);
    EXPECT_ERR(plexus_server_call_method(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_peer(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_peer_certificate(call, NULL, &der_len), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_peer_certificate(call, &der, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_last_message_compressed(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_metadata(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_deadline(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_is_cancelled(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_set_compression(call, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_recv(call, 0, NULL), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_recv_async(call, NULL, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send(call, NULL, 0, 0), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_send_async(call, req, 0, NULL, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    EXPECT_ERR(plexus_server_call_done_async(call, NULL, &tag), PLEXUS_ERR_NULL_ARGUMENT);
    /* A unary call's request came in the event: nothing to receive. */
    EXPECT(plexus_server_call_recv(call, 0, &m), PLEXUS_END_OF_STREAM);
    OK(plexus_server_call_finish(call, req, 0, NULL, NULL));
    plexus_bytes_free(req);
    plexus_event ev = take(f.cq, &T_CLIENT);
    CHECK(ev.result == PLEXUS_OK);
    plexus_bytes_free(ev.message);
    plexus_status_free(ev.status);
    plexus_server_call_free(call);
    fx_end(&f);
    plexus_cq_free(q);
}

/* plexus_shutdown with a server running and a call in flight: the call ends, nothing hangs,
 * the handles can still be freed. */
static void test_runtime_shutdown(void) {
    fixture f;
    fx_init(&f, NULL);
    register_all(&f);
    fx_start(&f);
    static int T_START;
    OK(plexus_call_start_async(f.channel, M_BIDI, NULL, f.cq, &T_START));
    const plexus_server_call *call = take_call(f.cq, &TAG_BIDI, NULL);
    plexus_event ev = take(f.cq, &T_START);
    const plexus_call *client = ev.call;
    OK(plexus_shutdown());
    plexus_bytes *m = NULL;
    int32_t rc = plexus_server_call_recv(call, LONG_MS, &m);
    CHECK(rc != PLEXUS_OK);
    plexus_call_free(client);
    plexus_server_call_free(call);
    plexus_channel_free(f.channel);
    plexus_server_free(f.server);
    plexus_cq_free(f.cq);
}

/* SIGPIPEs the process received: a library must not raise it (a C host that does not ignore
 * it dies), so a handler counts them and the run fails if there was one. */
static volatile sig_atomic_t sigpipes = 0;

static void on_sigpipe(int signo) {
    (void)signo;
    sigpipes++;
}

int main(void) {
    int passed = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGPIPE, &sa, NULL) == 0);
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
    RUN(test_bad_arguments);
    RUN(test_listeners);
    RUN(test_tls);
    RUN(test_methods);
    RUN(test_callbacks);
    RUN(test_shutdown_waits_for_callbacks);
    RUN(test_unary_status_and_metadata);
    RUN(test_async_streams);
    RUN(test_blocking_streams);
    RUN(test_cancellation);
    RUN(test_deadline);
    RUN(test_oversize);
    RUN(test_max_concurrent_calls);
    RUN(test_shutdown);
    RUN(test_zero_copy);
    RUN(test_parent);
    RUN(test_options);
    RUN(test_runtime_shutdown); /* last: the runtime is gone afterwards */
    OK(plexus_shutdown());
    CHECK(sigpipes == 0);
    return finish_tests("test_server", passed);
}
