/* plexus_shutdown while calls are in progress: a blocked receive and a blocked unary call
 * return PLEXUS_ERR_SHUTDOWN and a queued operation completes with it (never with the
 * transport error of their connection closing under them), and afterwards every function that needs the runtime
 * says PLEXUS_ERR_SHUTDOWN while frees still work. */
#include <pthread.h>

#include "common.h"

static const plexus_call *slow_call;
static const plexus_channel *channel;
static plexus_bytes *slow_unary_req;

static void *blocked_receiver(void *arg) {
    (void)arg;
    plexus_bytes *msg = NULL;
    EXPECT(plexus_call_recv(slow_call, LONG_MS, &msg), PLEXUS_ERR_SHUTDOWN);
    return NULL;
}

static void *blocked_unary(void *arg) {
    (void)arg;
    plexus_bytes *resp = NULL;
    EXPECT(plexus_unary(channel, UNARY, slow_unary_req, NULL, LONG_MS, &resp, NULL),
           PLEXUS_ERR_SHUTDOWN);
    return NULL;
}

int main(void) {
    OK(plexus_channel_new(test_target(), NULL, &channel));
    const plexus_cq *cq = NULL;
    OK(plexus_cq_new(&cq));

    echo_request r = {0};
    r.message = "slow";
    r.count = 10;
    r.delay_ms = 60000;
    plexus_bytes *req = encode_request(&r);
    OK(plexus_call_start_server_streaming(channel, SERVER_STREAM, req, NULL, LONG_MS, &slow_call, NULL));
    plexus_bytes *msg = NULL;
    OK(plexus_call_recv(slow_call, LONG_MS, &msg)); /* the first comes at once */
    plexus_bytes_free(msg);

    /* A queued call that would take a minute. */
    r.count = 0;
    plexus_bytes *unary_req = encode_request(&r);
    OK(plexus_unary_async(channel, UNARY, unary_req, NULL, cq, (void *)1));
    slow_unary_req = unary_req;

    pthread_t t, u;
    CHECK(pthread_create(&t, NULL, blocked_receiver, NULL) == 0);
    CHECK(pthread_create(&u, NULL, blocked_unary, NULL) == 0);
    /* Most runs shut down with both threads blocked; if one has not blocked yet, it sees the
     * shutdown at once, with the same result (nothing here depends on how long this takes). */
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    OK(plexus_shutdown());
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(pthread_join(u, NULL) == 0);

    plexus_event ev;
    OK(plexus_cq_next(cq, LONG_MS, &ev));
    CHECK(ev.tag == (void *)1 && ev.result == PLEXUS_ERR_SHUTDOWN);
    plexus_status_free(ev.status);
    plexus_bytes_free(ev.message);

    /* Everything that needs the runtime is refused now. */
    plexus_bytes *resp = NULL;
    EXPECT(plexus_unary(channel, UNARY, req, NULL, LONG_MS, &resp, NULL), PLEXUS_ERR_SHUTDOWN);
    EXPECT(plexus_unary_async(channel, UNARY, req, NULL, cq, NULL), PLEXUS_ERR_SHUTDOWN);
    const plexus_channel *again = NULL;
    EXPECT(plexus_channel_new(test_target(), NULL, &again), PLEXUS_ERR_SHUTDOWN);
    EXPECT(plexus_init(0), PLEXUS_ERR_SHUTDOWN);
    EXPECT(plexus_call_recv(slow_call, 0, &msg), PLEXUS_ERR_SHUTDOWN);
    OK(plexus_shutdown()); /* idempotent */

    plexus_call_free(slow_call);
    plexus_bytes_free(req);
    plexus_bytes_free(unary_req);
    plexus_cq_free(cq);
    plexus_channel_free(channel);
    return finish_tests("test_shutdown", 1);
}
