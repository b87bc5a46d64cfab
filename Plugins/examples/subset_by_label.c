/* A Meshgate balancer in plain C (ABI 1.2, endpoint metadata): a call that
 * carries request header `header` goes only to endpoints whose label `label`
 * has that value (a canary by version, a tenant's own replicas), round robin
 * among them; a call without the header may use every endpoint. When no
 * usable endpoint has the value, the call gets UNAVAILABLE saying so. Each
 * response says which label served it, in `x-upstream-<label>`.
 * Build: cc -shared -fPIC -I Sources/FilterABI/include Plugins/examples/subset_by_label.c -o libsubset_by_label.so
 * Config: { label: version, header: x-version } */
#define _GNU_SOURCE /* memmem */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshgate_filter.h"

static const mg_host *host;

typedef struct { char label[64]; char header[64]; char response_header[80]; } config;
typedef struct { const config *config; size_t next; } instance;

/* Finds "name":"value" (a real plugin would use a JSON parser). */
static int json_text(mg_str json, const char *name, char *out, size_t size) {
    char pattern[80];
    int n = snprintf(pattern, sizeof pattern, "\"%s\":\"", name);
    const char *start = memmem(json.ptr, json.len, pattern, (size_t)n);
    if (!start) return 0;
    start += n;
    const char *end = memchr(start, '"', json.len - (size_t)(start - json.ptr));
    if (!end || end == start || (size_t)(end - start) >= size) return 0;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = 0;
    return 1;
}

static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t error_size) {
    (void)ctx;
    config *c = calloc(1, sizeof *c);
    if (!c || !json_text(json, "label", c->label, sizeof c->label) || !json_text(json, "header", c->header, sizeof c->header)) {
        snprintf(error, error_size, "config needs \"label\" (an endpoint metadata key) and \"header\" (a request header)");
        free(c);
        return NULL;
    }
    snprintf(c->response_header, sizeof c->response_header, "x-upstream-%s", c->label);
    return c;
}

static void config_destroy(void *c) { free(c); }

static void *instance_new(void *c, uint32_t loop, mg_str cluster) {
    (void)loop; (void)cluster;
    instance *i = calloc(1, sizeof *i);
    if (i) i->config = c;
    return i;
}

static void instance_destroy(void *i) { free(i); }

static int has_label(const mg_endpoint_metadata *labels, const char *key, mg_str value) {
    for (size_t i = 0; i < labels->count; i++) {
        const mg_metadata_entry *e = &labels->entries[i];
        if (e->key.len == strlen(key) && memcmp(e->key.ptr, key, e->key.len) == 0)
            return e->value.len == value.len && memcmp(e->value.ptr, value.ptr, value.len) == 0;
    }
    return 0;
}

static int lb_pick(void *inst, mg_call *call, const mg_pick_request *request, const mg_endpoint_list *endpoints, uint32_t *chosen) {
    (void)request;
    instance *self = inst;
    mg_str name = { self->config->header, strlen(self->config->header) }, wanted;
    int subset = host->call_request_header(call, name, 0, &wanted);
    for (size_t n = 0; n < endpoints->count; n++) {
        size_t i = (self->next + n) % endpoints->count;
        const mg_endpoint *e = &endpoints->items[i];
        if (!e->healthy || e->ejected) continue;
        if (subset && !has_label(&endpoints->metadata[i], self->config->label, wanted)) continue;
        self->next = i + 1;
        *chosen = (uint32_t)i;
        return 0;
    }
    char message[256];
    int len = snprintf(message, sizeof message, "no usable endpoint has label %s=%.*s", self->config->label,
                       subset ? (int)wanted.len : 0, subset ? wanted.ptr : "");
    host->call_local_reply(call, MG_STATUS_UNAVAILABLE, (mg_str){ message, (size_t)len });
    return -1;
}

static void on_response_headers(void *inst, void *state, mg_call *call, mg_attempt *attempt) {
    (void)state;
    const config *c = ((instance *)inst)->config;
    mg_str value;
    if (host->attempt_endpoint_metadata(attempt, (mg_str){ c->label, strlen(c->label) }, &value))
        host->call_add_response_header(call, (mg_str){ c->response_header, strlen(c->response_header) }, value);
}

static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 2,
    .kinds = MG_KIND_FILTER | MG_KIND_BALANCER, .name = "subset_by_label", .version = "1.0",
    .config_new = config_new, .config_destroy = config_destroy,
    .instance_new = instance_new, .instance_destroy = instance_destroy,
    .on_response_headers = on_response_headers, .lb_pick = lb_pick,
};

/* A host older than 1.2 has neither the metadata field nor the function:
 * refuse to load rather than read past its structs. */
const mg_plugin *meshgate_plugin_v1(const mg_host *h) {
    if (h->abi_minor < 2 || h->size < offsetof(mg_host, attempt_endpoint_metadata) + sizeof(void *)) return NULL;
    host = h;
    return &plugin;
}
