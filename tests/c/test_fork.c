/* Fork and several copies of the library in one process.
 *
 * 1. A child forked while the runtime never started (the library loaded and used for
 *    buffers only) works fully.
 * 2. A child forked after the runtime started gets PLEXUS_ERR_FORKED from every call, never
 *    a deadlock (an alarm would kill it), and can load a fresh copy of the library and use
 *    that, as the Python binding does.
 * 3. Two copies of the library in one process, each with its own runtime, work side by
 *    side.
 * 4. Bad PLEXUS_THREADS or PLEXUS_SPIN_MICROS values fail the runtime's start with
 *    PLEXUS_ERR_INVALID_ARGUMENT and a message naming the variable; fixed, it starts (tried in
 *    a child forked before the runtime started, whose runtime starts afresh).
 *
 * PLEXUS_TEST_LIB names the libplexus.so the program is linked against; it is copied to a
 * temporary path so that dlopen loads a second, independent copy. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

/* The few functions the tests call through a dlopen'ed copy. */
typedef struct {
    void *handle;
    int32_t (*channel_new)(const char *, const plexus_channel_options *, const plexus_channel **);
    void (*channel_free)(const plexus_channel *);
    int32_t (*bytes_copy)(const uint8_t *, size_t, plexus_bytes **);
    void (*bytes_free)(plexus_bytes *);
    int32_t (*bytes_data)(const plexus_bytes *, const uint8_t **, size_t *);
    int32_t (*unary)(const plexus_channel *, const char *, const plexus_bytes *,
                     const plexus_call_options *, int64_t, plexus_bytes **, plexus_status **);
    int32_t (*shutdown)(void);
} library;

static void resolve(void *handle, const char *name, void *fn_slot, size_t size) {
    void *sym = dlsym(handle, name);
    CHECK(sym != NULL);
    memcpy(fn_slot, &sym, size);
}

/* Loads a private copy of libplexus from a fresh temporary path. */
static library load_copy(void) {
    const char *lib = getenv("PLEXUS_TEST_LIB");
    CHECK(lib != NULL);
    char path[] = "/tmp/libplexus-copy-XXXXXX";
    int out = mkstemp(path);
    CHECK(out >= 0);
    FILE *in = fopen(lib, "rb");
    CHECK(in != NULL);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) CHECK(write(out, buf, n) == (ssize_t)n);
    fclose(in);
    close(out);
    library l;
    l.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (l.handle == NULL) fprintf(stderr, "dlopen: %s\n", dlerror());
    CHECK(l.handle != NULL);
    unlink(path);
    resolve(l.handle, "plexus_channel_new", &l.channel_new, sizeof l.channel_new);
    resolve(l.handle, "plexus_channel_free", &l.channel_free, sizeof l.channel_free);
    resolve(l.handle, "plexus_bytes_copy", &l.bytes_copy, sizeof l.bytes_copy);
    resolve(l.handle, "plexus_bytes_free", &l.bytes_free, sizeof l.bytes_free);
    resolve(l.handle, "plexus_bytes_data", &l.bytes_data, sizeof l.bytes_data);
    resolve(l.handle, "plexus_unary", &l.unary, sizeof l.unary);
    resolve(l.handle, "plexus_shutdown", &l.shutdown, sizeof l.shutdown);
    return l;
}

/* One unary call through a dlopen'ed copy. */
static void call_through(const library *l, const char *text) {
    const plexus_channel *ch = NULL;
    CHECK(l->channel_new(test_target(), NULL, &ch) == PLEXUS_OK);
    /* Only the copy's functions: in a forked child the linked copy refuses every call. */
    echo_request r = {0};
    r.message = text;
    static pb_buf b;
    encode_raw(&r, &b);
    plexus_bytes *req = NULL, *resp = NULL;
    CHECK(l->bytes_copy(b.data, b.len, &req) == PLEXUS_OK);
    CHECK(l->unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL) == PLEXUS_OK);
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK(l->bytes_data(resp, &data, &len) == PLEXUS_OK);
    echo_response got = decode_raw(data, len);
    CHECK(got.message_len == strlen(text) && memcmp(got.message, text, got.message_len) == 0);
    l->bytes_free(resp);
    l->bytes_free(req);
    l->channel_free(ch);
}

static void call_linked(const char *text) {
    const plexus_channel *ch = NULL;
    OK(plexus_channel_new(test_target(), NULL, &ch));
    plexus_bytes *req = request_text(text), *resp = NULL;
    OK(plexus_unary(ch, UNARY, req, NULL, LONG_MS, &resp, NULL));
    CHECK(response_is(resp, text));
    plexus_bytes_free(resp);
    plexus_bytes_free(req);
    plexus_channel_free(ch);
}

/* Runs `child` in a forked process with a deadlock alarm; checks it exits 0. */
static void in_child(void (*child)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(120);
        child();
        fflush(NULL);
        _exit(0);
    }
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        fprintf(stderr, "child failed: %s %d\n", WIFSIGNALED(wstatus) ? "signal" : "exit",
                WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : WEXITSTATUS(wstatus));
        exit(1);
    }
}

static void child_before_start(void) {
    /* The parent only loaded the library and made buffers: everything works here. */
    call_linked("child of a fresh parent");
    OK(plexus_shutdown());
}

static void child_with_bad_environment(void) {
    setenv("PLEXUS_THREADS", "many", 1);
    EXPECT(plexus_init(0), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "PLEXUS_THREADS") != NULL);
    setenv("PLEXUS_THREADS", "2", 1);
    setenv("PLEXUS_SPIN_MICROS", "-5", 1);
    EXPECT(plexus_init(0), PLEXUS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(plexus_last_error(), "PLEXUS_SPIN_MICROS") != NULL);
    const plexus_channel *ch = NULL;
    EXPECT(plexus_channel_new(test_target(), NULL, &ch), PLEXUS_ERR_INVALID_ARGUMENT);
    /* No spinning at all still works. */
    setenv("PLEXUS_SPIN_MICROS", "0", 1);
    OK(plexus_init(0));
    call_linked("child with spinning off");
    OK(plexus_shutdown());
}

static void child_after_start(void) {
    const plexus_channel *ch = NULL;
    plexus_bytes *b = NULL;
    EXPECT(plexus_channel_new(test_target(), NULL, &ch), PLEXUS_ERR_FORKED);
    CHECK(strstr(plexus_last_error(), "fork") != NULL);
    EXPECT(plexus_bytes_copy((const uint8_t *)"x", 1, &b), PLEXUS_ERR_FORKED);
    EXPECT(plexus_init(0), PLEXUS_ERR_FORKED);
    const plexus_cq *cq = NULL;
    EXPECT(plexus_cq_new(&cq), PLEXUS_ERR_FORKED);
    EXPECT(plexus_shutdown(), PLEXUS_ERR_FORKED);
    CHECK(strcmp(plexus_result_name(PLEXUS_ERR_FORKED), "PLEXUS_ERR_FORKED") == 0);
    plexus_channel_free(NULL);
    /* A fresh copy of the library is independent of the inherited one: it works. */
    library copy = load_copy();
    call_through(&copy, "fresh copy in a forked child");
    CHECK(copy.shutdown() == PLEXUS_OK);
}

int main(void) {
    /* Before the runtime starts: buffers and metadata do not start it. */
    plexus_bytes *b = NULL;
    OK(plexus_bytes_copy((const uint8_t *)"x", 1, &b));
    plexus_metadata *md = NULL;
    OK(plexus_metadata_new(&md));
    OK(plexus_metadata_append(md, "k", "v"));
    in_child(child_before_start);
    printf("PASS fork before the runtime started: the child works\n");
    in_child(child_with_bad_environment);
    printf("PASS bad PLEXUS_THREADS and PLEXUS_SPIN_MICROS: INVALID_ARGUMENT, then it starts\n");

    /* Start the runtime, then fork. */
    call_linked("parent");
    in_child(child_after_start);
    printf("PASS fork after the runtime started: PLEXUS_ERR_FORKED, fresh copy works\n");
    call_linked("parent after the fork");

    /* Two copies in one process, side by side. */
    library copy = load_copy();
    call_through(&copy, "second copy");
    call_linked("first copy");
    call_through(&copy, "second copy again");
    CHECK(copy.shutdown() == PLEXUS_OK);
    call_linked("first copy after the second shut down");
    printf("PASS two copies of the library in one process\n");

    plexus_metadata_free(md);
    plexus_bytes_free(b);
    OK(plexus_shutdown());
    return finish_tests("test_fork", 4);
}
