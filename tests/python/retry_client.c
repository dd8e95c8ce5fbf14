/* The C client in the comparisons of retry behaviour with grpcio's (test_retries.py): one
 * unary call through plexus.h with a service config, printing "STATUS <code name>".
 *
 * retry_client TARGET METHOD SERVICE_CONFIG ENABLE_RETRIES [KEY VALUE]...
 *
 * Exit status 0 when the call ran (whatever its status), 2 for bad arguments, 1 when the
 * library refused something (its error text on stderr). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

static int fail(const char *what, plexus_result result) {
    fprintf(stderr, "%s: %s: %s\n", what, plexus_result_name(result), plexus_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 5 || (argc - 5) % 2 != 0) {
        fprintf(stderr,
                "usage: retry_client TARGET METHOD SERVICE_CONFIG ENABLE_RETRIES [KEY VALUE]...\n");
        return 2;
    }
    int status_code = -1;
    int exit_code = 0;
    plexus_result r;
    plexus_channel_options *channel_options = NULL;
    const plexus_channel *channel = NULL;
    plexus_metadata *metadata = NULL;
    plexus_call_options *call_options = NULL;
    plexus_bytes *request = NULL;
    plexus_bytes *response = NULL;
    plexus_status *status = NULL;

    if ((r = plexus_channel_options_new(&channel_options)) != PLEXUS_OK) {
        return fail("options", r);
    }
    if ((r = plexus_channel_options_set_service_config(channel_options, argv[3])) != PLEXUS_OK) {
        exit_code = fail("service config", r);
        goto done;
    }
    if ((r = plexus_channel_options_set_enable_retries(channel_options, strcmp(argv[4], "0") != 0)) !=
        PLEXUS_OK) {
        exit_code = fail("enable retries", r);
        goto done;
    }
    if ((r = plexus_channel_new(argv[1], channel_options, &channel)) != PLEXUS_OK) {
        exit_code = fail("channel", r);
        goto done;
    }
    if ((r = plexus_metadata_new(&metadata)) != PLEXUS_OK) {
        exit_code = fail("metadata", r);
        goto done;
    }
    for (int i = 5; i + 1 < argc; i += 2) {
        if ((r = plexus_metadata_append(metadata, argv[i], argv[i + 1])) != PLEXUS_OK) {
            exit_code = fail("metadata entry", r);
            goto done;
        }
    }
    if ((r = plexus_call_options_new(&call_options)) != PLEXUS_OK ||
        (r = plexus_call_options_set_metadata(call_options, metadata)) != PLEXUS_OK ||
        (r = plexus_call_options_set_timeout_ms(call_options, 30000)) != PLEXUS_OK) {
        exit_code = fail("call options", r);
        goto done;
    }
    if ((r = plexus_bytes_copy((const uint8_t *)"ping", 4, &request)) != PLEXUS_OK) {
        exit_code = fail("request", r);
        goto done;
    }
    r = plexus_unary(channel, argv[2], request, call_options, -1, &response, &status);
    if (r != PLEXUS_OK && r != PLEXUS_ERR_RPC) {
        exit_code = fail("call", r);
        goto done;
    }
    if ((r = plexus_status_code(status, &status_code)) != PLEXUS_OK) {
        exit_code = fail("status", r);
        goto done;
    }
    printf("STATUS %s\n", plexus_code_name(status_code));

done:
    plexus_status_free(status);
    plexus_bytes_free(response);
    plexus_bytes_free(request);
    plexus_call_options_free(call_options);
    plexus_metadata_free(metadata);
    plexus_channel_free(channel);
    plexus_channel_options_free(channel_options);
    return exit_code;
}
