/* 8 threads share one channel and make 1,000 blocking unary calls each (PLEXUS_TEST_CALLS
 * overrides the count, for the valgrind run); every reply is checked, and the channel's
 * statistics must count every call, over one connection. */
#include <pthread.h>

#include "common.h"

enum { THREADS = 8 };

static const plexus_channel *channel;
static int calls_per_thread = 1000;

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char text[64];
    for (int i = 0; i < calls_per_thread; i++) {
        snprintf(text, sizeof text, "thread %d call %d", id, i);
        plexus_bytes *req = request_text(text), *resp = NULL;
        OK(plexus_unary(channel, UNARY, req, NULL, LONG_MS, &resp, NULL));
        CHECK(response_is(resp, text));
        plexus_bytes_free(resp);
        plexus_bytes_free(req);
    }
    return NULL;
}

int main(void) {
    const char *n = getenv("PLEXUS_TEST_CALLS");
    if (n != NULL) calls_per_thread = atoi(n);
    CHECK(calls_per_thread > 0);
    /* A target string of its own, so the statistics count only these calls. */
    char target[256];
    const char *t = test_target();
    snprintf(target, sizeof target, "dns:///%s", strncmp(t, "http://", 7) == 0 ? t + 7 : t);
    OK(plexus_channel_new(target, NULL, &channel));
    pthread_t threads[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    plexus_channel_stats stats;
    OK(plexus_channel_get_stats(channel, &stats));
    uint64_t total = (uint64_t)THREADS * (uint64_t)calls_per_thread;
    CHECK(stats.calls_started == total && stats.calls_succeeded == total);
    CHECK(stats.calls_failed == 0 && stats.connections == 1 && stats.active_streams == 0);
    plexus_channel_free(channel);
    OK(plexus_shutdown());
    printf("%d threads x %d calls on one channel\n", THREADS, calls_per_thread);
    return finish_tests("test_threads", 1);
}
