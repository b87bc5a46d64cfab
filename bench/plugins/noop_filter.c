/* A filter that implements every per-call hook and does nothing in any:
 * chained 1, 4 and 16 times by bench/run.sh (targets meshgate+noop1,
 * +noop4, +noop16), it shows what the host itself costs per hook call,
 * apart from what any real filter does. A unary call that succeeds first
 * time makes 7 hook calls per filter: call_new, on_request_headers,
 * on_attempt_start, on_response_headers, on_attempt_done, on_call_done,
 * call_destroy.
 * Build: cc -O2 -shared -fPIC -I Sources/FilterABI/include bench/plugins/noop_filter.c -o libnoop_filter.so */
#include <stddef.h>
#include "meshgate_filter.h"

/* call_new returns a state pointer, as a filter with per-call state does,
 * so that the host passes it on to every hook (NULL would be allowed too). */
static char call_state;

static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t error_size) {
    (void)ctx; (void)json; (void)error; (void)error_size;
    return &call_state;
}
static void config_destroy(void *config) { (void)config; }
static void *instance_new(void *config, uint32_t loop, mg_str cluster) { (void)loop; (void)cluster; return config; }
static void instance_destroy(void *instance) { (void)instance; }
static void *call_new(void *instance, mg_call *call) { (void)instance; (void)call; return &call_state; }
static void call_destroy(void *instance, void *state) { (void)instance; (void)state; }
static mg_action on_request_headers(void *instance, void *state, mg_call *call) {
    (void)instance; (void)state; (void)call;
    return MG_CONTINUE;
}
static void on_attempt_start(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)call; (void)attempt;
}
static void on_response_headers(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)call; (void)attempt;
}
static void on_attempt_done(void *instance, void *state, mg_call *call, const mg_attempt_result *result,
                            mg_retry_decision *decision) {
    (void)instance; (void)state; (void)call; (void)result; (void)decision;
}
static void on_call_done(void *instance, void *state, mg_call *call, const mg_call_result *result) {
    (void)instance; (void)state; (void)call; (void)result;
}

static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 0,
    .kinds = MG_KIND_FILTER, .name = "noop", .version = "1.0",
    .config_new = config_new, .config_destroy = config_destroy,
    .instance_new = instance_new, .instance_destroy = instance_destroy,
    .call_new = call_new, .call_destroy = call_destroy,
    .on_request_headers = on_request_headers, .on_attempt_start = on_attempt_start,
    .on_response_headers = on_response_headers, .on_attempt_done = on_attempt_done,
    .on_call_done = on_call_done,
};

const mg_plugin *meshgate_plugin_v1(const mg_host *host) { (void)host; return &plugin; }
