/* TLS channels and call credentials against real TLS peers that scripts/test-c.sh starts:
 * the plexus echo server over mutual TLS (PLEXUS_TEST_TLS_TARGET), grpcio echo servers over
 * TLS and mutual TLS that echo the `authorization` metadata back as `x-authorization`
 * (PLEXUS_TEST_GRPCIO_TLS_TARGET, PLEXUS_TEST_GRPCIO_MTLS_TARGET; tests/c/grpcio_tls_server.py),
 * and a TLS server that offers only http/1.1 by ALPN (PLEXUS_TEST_NO_H2_TARGET). Certificates
 * come from `plexus-peer certs` in PLEXUS_TEST_CERTS; the servers' certificate is for
 * `localhost`, so the IP targets set that name. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <time.h>

#include "common.h"

static const char *env(const char *name) {
    const char *value = getenv(name);
    if (value == NULL || value[0] == '\0') {
        fprintf(stderr, "%s is not set (scripts/test-c.sh sets it)\n", name);
        exit(2);
    }
    return value;
}

/* Reads PLEXUS_TEST_CERTS/`name` into a new buffer (free it), its length into `*len`. */
static uint8_t *read_cert(const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", env("PLEXUS_TEST_CERTS"), name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    uint8_t *buf = malloc(1 << 16);
    CHECK(buf != NULL);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    CHECK(*len > 0);
    return buf;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to LONG_MS) for `*value` to reach `want`; the check is on the value only. */
static int reaches(atomic_int *value, int want) {
    for (int waited = 0; waited < LONG_MS && atomic_load(value) != want; waited++) sleep_ms(1);
    return atomic_load(value) == want;
}

/* Options trusting `ca` (a file in PLEXUS_TEST_CERTS), verifying `name`, with the client
 * certificate if `identity`; not shared, so each case opens its own connections. */
static plexus_channel_options *tls_options(const char *ca, const char *name, int identity) {
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_shared(o, false));
    size_t len = 0;
    uint8_t *pem = read_cert(ca, &len);
    OK(plexus_channel_options_add_tls_ca_pem(o, pem, len));
    free(pem); /* copied */
    if (name != NULL) OK(plexus_channel_options_set_tls_server_name(o, name));
    if (identity) {
        size_t cert_len = 0, key_len = 0;
        uint8_t *cert = read_cert("client.pem", &cert_len);
        uint8_t *key = read_cert("client.key", &key_len);
        OK(plexus_channel_options_set_tls_identity_pem(o, cert, cert_len, key, key_len));
        free(cert);
        free(key);
    }
    return o;
}

/* What one unary call gave. */
typedef struct {
    int32_t rc;
    int32_t code;
    char message[1024];    /* the status message */
    char last_error[1024]; /* plexus_last_error() after the call */
    char auth[256];        /* the x-authorization the grpcio server echoed, if any */
} outcome;

/* One unary call "secret" to `target` on a new channel with `o`, then frees the channel. */
static outcome call_once(const char *target, const plexus_channel_options *o,
                         const plexus_call_options *c) {
    outcome out;
    memset(&out, 0, sizeof out);
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(target, o, &ch));
    plexus_bytes *req = request_text("secret"), *resp = NULL;
    plexus_status *status = NULL;
    out.rc = plexus_unary(ch, UNARY, req, c, LONG_MS, &resp, &status);
    snprintf(out.last_error, sizeof out.last_error, "%s", plexus_last_error());
    out.code = -1;
    if (status != NULL) {
        out.code = status_code(status);
        const char *text = NULL;
        size_t len = 0;
        OK(plexus_status_message(status, &text, &len));
        snprintf(out.message, sizeof out.message, "%.*s", (int)len, text);
        const plexus_metadata *initial = NULL;
        OK(plexus_status_initial_metadata(status, &initial));
        const uint8_t *value = NULL;
        OK(plexus_metadata_get(initial, "x-authorization", &value, &len));
        if (value != NULL) snprintf(out.auth, sizeof out.auth, "%.*s", (int)len, value);
    }
    if (out.rc == PLEXUS_OK) CHECK(response_is(resp, "secret"));
    plexus_status_free(status);
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
    return out;
}

/* A call that failed with UNAVAILABLE and `text` in its status message and error text. */
static void expect_unavailable(outcome r, const char *text) {
    if (r.rc != PLEXUS_ERR_RPC || r.code != 14 || strstr(r.message, text) == NULL ||
        strstr(r.last_error, text) == NULL) {
        fprintf(stderr, "expected UNAVAILABLE with \"%s\", got %s, code %d, \"%s\" (last error: %s)\n",
                text, plexus_result_name(r.rc), r.code, r.message, r.last_error);
        exit(1);
    }
}

/* ---- call credentials ---- */

/* A credentials callback's state: the token it adds or the error it fails with, whether it
 * blocks until told to go on, and counts of its calls and releases. */
typedef struct {
    const char *token;
    const char *fail;
    atomic_int block;
    atomic_int calls;
    atomic_int released;
} creds;

static int32_t add_token(void *user_data, const char *method, plexus_metadata *md, char *error,
                         size_t error_size) {
    creds *c = user_data;
    atomic_fetch_add(&c->calls, 1);
    if (strcmp(method, UNARY) != 0) {
        snprintf(error, error_size, "called for %s", method);
        return 1;
    }
    if (c->fail != NULL) {
        snprintf(error, error_size, "%s", c->fail);
        return 1;
    }
    while (atomic_load(&c->block)) sleep_ms(1);
    char value[128];
    snprintf(value, sizeof value, "Bearer %s", c->token);
    return plexus_metadata_append(md, "authorization", value) == PLEXUS_OK ? 0 : 1;
}

static void release_creds(void *user_data) { atomic_fetch_add(&((creds *)user_data)->released, 1); }

/* Per-call metadata and the credentials callback both carry a bearer token to grpcio. */
static void test_tokens_reach_grpcio(void) {
    const char *target = env("PLEXUS_TEST_GRPCIO_TLS_TARGET");
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 0);
    OK(plexus_channel_options_set_tls_native_roots(o, false));

    /* Per-call metadata. */
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "authorization", "Bearer per-call"));
    plexus_call_options *c = NULL;
    OK(plexus_call_options_new(&c));
    OK(plexus_call_options_set_metadata(c, md));
    plexus_metadata_free(md);
    outcome r = call_once(target, o, c);
    plexus_call_options_free(c);
    CHECK(r.rc == PLEXUS_OK && r.code == 0);
    CHECK(strcmp(r.auth, "Bearer per-call") == 0);

    /* The credentials callback, run once per call; released once nothing uses it. */
    static creds hook = {.token = "from-hook"};
    OK(plexus_channel_options_set_call_credentials(o, add_token, &hook, release_creds));
    r = call_once(target, o, NULL);
    CHECK(r.rc == PLEXUS_OK && strcmp(r.auth, "Bearer from-hook") == 0);
    r = call_once(target, o, NULL);
    CHECK(r.rc == PLEXUS_OK && strcmp(r.auth, "Bearer from-hook") == 0);
    CHECK(atomic_load(&hook.calls) == 2);
    CHECK(atomic_load(&hook.released) == 0);
    plexus_channel_options_free(o);
    CHECK(reaches(&hook.released, 1));
}

/* A callback that fails fails the call, unsent, with UNAVAILABLE and its text. The channel
 * is shared (the default), so the process-wide registry holds its options until it is freed. */
static void test_failing_credentials(void) {
    static creds down = {.fail = "token service down"};
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 0);
    OK(plexus_channel_options_set_shared(o, true));
    OK(plexus_channel_options_set_call_credentials(o, add_token, &down, release_creds));
    outcome r = call_once(env("PLEXUS_TEST_GRPCIO_TLS_TARGET"), o, NULL);
    expect_unavailable(r, "token service down");
    CHECK(strstr(r.message, "call credentials") != NULL);
    CHECK(atomic_load(&down.calls) == 1);
    plexus_channel_options_free(o);
    CHECK(reaches(&down.released, 1));
}

/* A call whose deadline passes while the callback blocks ends with DEADLINE_EXCEEDED; the
 * callback finishes later and is released after. */
static void test_credentials_past_the_deadline(void) {
    static creds slow = {.token = "late"};
    atomic_store(&slow.block, 1);
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 0);
    OK(plexus_channel_options_set_call_credentials(o, add_token, &slow, release_creds));
    plexus_call_options *c = NULL;
    OK(plexus_call_options_new(&c));
    OK(plexus_call_options_set_timeout_ms(c, 100));
    outcome r = call_once(env("PLEXUS_TEST_GRPCIO_TLS_TARGET"), o, c);
    plexus_call_options_free(c);
    plexus_channel_options_free(o);
    CHECK(r.rc == PLEXUS_ERR_RPC && r.code == 4);
    CHECK(strstr(r.message, "credentials") != NULL);
    CHECK(atomic_load(&slow.released) == 0); /* the callback still runs */
    atomic_store(&slow.block, 0);
    CHECK(reaches(&slow.released, 1));
    CHECK(atomic_load(&slow.calls) == 1);
}

/* Ownership of user_data: released at once on failure and when removed or replaced. */
static void test_credentials_ownership(void) {
    static creds a, b;
    EXPECT(plexus_channel_options_set_call_credentials(NULL, add_token, &a, release_creds),
           PLEXUS_ERR_NULL_ARGUMENT);
    CHECK(atomic_load(&a.released) == 1);
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    OK(plexus_channel_options_set_call_credentials(o, NULL, &a, release_creds));
    CHECK(atomic_load(&a.released) == 2);
    OK(plexus_channel_options_set_call_credentials(o, add_token, &a, release_creds));
    OK(plexus_channel_options_set_call_credentials(o, add_token, &b, release_creds));
    CHECK(atomic_load(&a.released) == 3);
    OK(plexus_channel_options_set_call_credentials(o, add_token, &b, NULL)); /* no release */
    CHECK(atomic_load(&b.released) == 1);
    plexus_channel_options_free(o);
    CHECK(atomic_load(&b.released) == 1);
    CHECK(atomic_load(&a.calls) == 0 && atomic_load(&b.calls) == 0);
}

/* ---- TLS errors name their cause ---- */

static void test_wrong_ca_and_name(const char *target, int identity) {
    plexus_channel_options *o = tls_options("other-ca.pem", "localhost", identity);
    expect_unavailable(call_once(target, o, NULL),
                       "TLS handshake failed: the server's certificate is not signed by a "
                       "trusted CA (unknown issuer)");
    plexus_channel_options_free(o);
    o = tls_options("ca.pem", "wrong.example", identity);
    outcome r = call_once(target, o, NULL);
    expect_unavailable(r, "TLS handshake failed: name mismatch");
    CHECK(strstr(r.message, "not valid for name \"wrong.example\"") != NULL);
    plexus_channel_options_free(o);
}

static void test_grpcio_tls(void) {
    test_wrong_ca_and_name(env("PLEXUS_TEST_GRPCIO_TLS_TARGET"), 0);
}

/* grpcio with mutual TLS: a client certificate from its CA gets through, none does not. */
static void test_grpcio_mtls(void) {
    const char *target = env("PLEXUS_TEST_GRPCIO_MTLS_TARGET");
    static creds hook = {.token = "mtls"};
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 1);
    OK(plexus_channel_options_set_call_credentials(o, add_token, &hook, release_creds));
    outcome r = call_once(target, o, NULL);
    CHECK(r.rc == PLEXUS_OK && strcmp(r.auth, "Bearer mtls") == 0);
    plexus_channel_options_free(o);
    CHECK(reaches(&hook.released, 1));
    o = tls_options("ca.pem", "localhost", 0);
    expect_unavailable(call_once(target, o, NULL), "client certificate");
    plexus_channel_options_free(o);
    test_wrong_ca_and_name(target, 1);
}

/* The plexus server with mutual TLS: the same errors, and the callback runs per call. */
static void test_plexus_mtls(void) {
    const char *target = env("PLEXUS_TEST_TLS_TARGET");
    static creds hook = {.token = "plexus"};
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 1);
    OK(plexus_channel_options_set_call_credentials(o, add_token, &hook, release_creds));
    outcome r = call_once(target, o, NULL);
    CHECK(r.rc == PLEXUS_OK && r.code == 0);
    CHECK(atomic_load(&hook.calls) == 1);
    plexus_channel_options_free(o);
    CHECK(reaches(&hook.released, 1));
    test_wrong_ca_and_name(target, 1);
}

/* An :authority override is also the name the certificate is checked against (grpcio's
 * grpc.default_authority): the test certificate is valid for *.test.google.fr, not for the
 * IP address the target names. */
static void test_authority(void) {
    const char *target = env("PLEXUS_TEST_GRPCIO_TLS_TARGET");
    plexus_channel_options *o = tls_options("ca.pem", NULL, 0);
    OK(plexus_channel_options_set_authority(o, "foo.test.google.fr"));
    outcome r = call_once(target, o, NULL);
    CHECK(r.rc == PLEXUS_OK && r.code == 0);
    plexus_channel_options_free(o);
    o = tls_options("ca.pem", NULL, 0);
    OK(plexus_channel_options_set_authority(o, "wrong.example:443"));
    expect_unavailable(call_once(target, o, NULL), "not valid for name \"wrong.example\"");
    OK(plexus_channel_options_set_authority(o, "bad authority!"));
    const plexus_channel *ch = NULL;
    EXPECT(plexus_channel_new(target, o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "invalid authority") != NULL);
    plexus_channel_options_free(o);
}

/* A TLS server that does not agree to ALPN h2 is refused with a text that says so. */
static void test_no_h2(void) {
    plexus_channel_options *o = tls_options("ca.pem", "localhost", 0);
    expect_unavailable(call_once(env("PLEXUS_TEST_NO_H2_TARGET"), o, NULL),
                       "TLS handshake failed: the server did not negotiate HTTP/2 (ALPN \"h2\")");
    plexus_channel_options_free(o);
}

/* PEMs are parsed by plexus_channel_new, which names what is wrong. */
static void test_bad_pems(void) {
    plexus_channel_options *o = NULL;
    OK(plexus_channel_options_new(&o));
    const char *junk = "not a certificate";
    OK(plexus_channel_options_add_tls_ca_pem(o, (const uint8_t *)junk, strlen(junk)));
    const plexus_channel *ch = NULL;
    EXPECT(plexus_channel_new("127.0.0.1:1", o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "CA certificate") != NULL);
    plexus_channel_options_free(o);

    o = tls_options("ca.pem", "localhost", 0);
    size_t cert_len = 0;
    uint8_t *cert = read_cert("client.pem", &cert_len);
    OK(plexus_channel_options_set_tls_identity_pem(o, cert, cert_len, (const uint8_t *)junk,
                                                   strlen(junk)));
    free(cert);
    EXPECT(plexus_channel_new("127.0.0.1:1", o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "client key") != NULL);
    /* A key that is not the certificate's. */
    size_t key_len = 0;
    uint8_t *key = read_cert("server.key", &key_len);
    cert = read_cert("client.pem", &cert_len);
    OK(plexus_channel_options_set_tls_identity_pem(o, cert, cert_len, key, key_len));
    free(cert);
    free(key);
    EXPECT(plexus_channel_new("127.0.0.1:1", o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "client certificate and key") != NULL);
    OK(plexus_channel_options_set_tls_server_name(o, "bad name!"));
    EXPECT(plexus_channel_new("127.0.0.1:1", o, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    plexus_channel_options_free(o);
}

int main(void) {
    int passed = 0;
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
    RUN(test_tokens_reach_grpcio);
    RUN(test_failing_credentials);
    RUN(test_credentials_past_the_deadline);
    RUN(test_credentials_ownership);
    RUN(test_grpcio_tls);
    RUN(test_grpcio_mtls);
    RUN(test_plexus_mtls);
    RUN(test_authority);
    RUN(test_no_h2);
    RUN(test_bad_pems);
    OK(plexus_shutdown());
    return finish_tests("test_tls", passed);
}
