/* A Meshgate filter in plain C: refuse calls that lack a request header
 * (PERMISSION_DENIED), and tag the responses of the others.
 * Build: cc -shared -fPIC -I Sources/FilterABI/include Plugins/examples/require_header.c -o librequire_header.so
 * Config: { header: x-api-key } */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshgate_filter.h"

static const mg_host *host;

typedef struct { char header[128]; } config;

static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t error_size) {
    (void)ctx;
    config *c = calloc(1, sizeof *c);
    /* A real plugin would use a JSON parser; this one finds "header":"NAME". */
    const char *key = memmem(json.ptr, json.len, "\"header\":\"", 10);
    const char *end = key ? memchr(key + 10, '"', json.len - (size_t)(key + 10 - json.ptr)) : NULL;
    if (!c || !end || end - (key + 10) == 0 || end - (key + 10) >= (long)sizeof c->header) {
        snprintf(error, error_size, "config needs \"header\": the name of the required request header");
        free(c);
        return NULL;
    }
    memcpy(c->header, key + 10, (size_t)(end - (key + 10)));
    return c;
}

static void config_destroy(void *c) { free(c); }

static void *instance_new(void *c, uint32_t loop, mg_str cluster) { (void)loop; (void)cluster; return c; }

static mg_action on_request_headers(void *instance, void *state, mg_call *call) {
    (void)state;
    const config *c = instance;
    mg_str name = { c->header, strlen(c->header) }, value;
    if (host->call_request_header(call, name, 0, &value)) return MG_CONTINUE;
    char message[192];
    int n = snprintf(message, sizeof message, "missing request header %s", c->header);
    host->call_local_reply(call, MG_STATUS_PERMISSION_DENIED, (mg_str){ message, (size_t)n });
    return MG_LOCAL_REPLY;
}

static void on_response_headers(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)attempt;
    host->call_add_response_header(call, (mg_str){ "x-checked-by", 12 }, (mg_str){ "require_header", 14 });
}

static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 0,
    .kinds = MG_KIND_FILTER, .name = "require_header", .version = "1.0",
    .config_new = config_new, .config_destroy = config_destroy, .instance_new = instance_new,
    .on_request_headers = on_request_headers, .on_response_headers = on_response_headers,
};

const mg_plugin *meshgate_plugin_v1(const mg_host *h) { host = h; return &plugin; }
