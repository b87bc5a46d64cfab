/*
 * Meshgate filter plugin ABI, version 1.3 (1.0 released; 1.1 appends
 * call_set_log_field, counter_declare and counter_add to mg_host; 1.2
 * appends endpoint metadata: mg_endpoint_list.metadata and
 * attempt_endpoint_metadata; 1.3 appends call_peer_address and shadow
 * calls (call_start_shadow, mg_shadow_result), and lets
 * call_add_response_header add fields to a filter's local reply).
 *
 * v1 never changes meaning: a minor version only appends (fields at the end
 * of the structs below, new optional hooks, new host functions); a breaking
 * change gets a new major version, with its own entry symbol, beside this
 * one. The host refuses a plugin of another major version, or one that
 * needs a newer minor than the host offers.
 *
 * A plugin is a shared library (C, Swift, anything with a C ABI) that exports
 * exactly one symbol, MG_PLUGIN_ENTRY_V1. Build one against this header
 * alone:
 *
 *     cc -shared -fPIC -I Sources/FilterABI/include my_filter.c -o libmy_filter.so
 *
 * ---------------------------------------------------------------------------
 * Objects and lifetimes (each destroy hook is called exactly once)
 *
 *   plugin      the loaded image. The host calls the entry once per load.
 *   config      one `filters:` entry of one route, created from its YAML
 *               config at load or reload, on the control thread. A route
 *               whose chain holds no balancer gets the default one: the
 *               plugin named round_robin (the built-in one unless
 *               `plugins:` declares that name), of which each load or
 *               reload creates one config, from "{}", shared by every such
 *               route (there is no per-cluster default; its instances are
 *               per cluster, as any balancer's). Shared by every event
 *               loop: after config_new returns it must be immutable or
 *               internally synchronized. Destroyed when no route-table
 *               generation refers to it and every instance, call and
 *               attempt made from it has ended.
 *   instance    one per (config, event loop, cluster), created on that loop
 *               when first needed and destroyed on it. Loop-local state
 *               (round-robin cursors, caches) lives here: no locks needed.
 *               An instance only ever sees one cluster.
 *   call state  optional, one per RPC through a chain holding the config,
 *               created and destroyed on the call's loop.
 *
 * Unloading: the host never dlcloses a plugin image (a Swift runtime crashes
 * when its image is unmapped). "Unloaded" means every destroy hook has run
 * and the host will never call into the image again. Hot swap loads the new
 * file from a private content-addressed copy, so it is a new image.
 *
 * Threads
 *   control thread  one host thread, never an event loop: config_new,
 *                   config_destroy and the timers of every config run there,
 *                   one at a time.
 *   event loops     everything else. Hooks of one call are never concurrent;
 *                   hooks of different calls of one config may run at the
 *                   same time on different loops (touch only the instance or
 *                   synchronize).
 *   Host functions may be called only from inside a hook, on the hook's
 *   thread, with handles that hook received -- except `log`, which any
 *   thread may call at any time.
 *
 * Memory
 *   Each side frees only what it allocated. Every pointer the host passes
 *   (mg_str, structs, handles) is valid only until the hook returns; copy
 *   what you keep. Strings (mg_str) are not NUL-terminated unless stated.
 *   Pointers the plugin returns (descriptor, name) must stay valid until the
 *   process exits (static storage, or memory never freed).
 *
 * Errors
 *   A plugin must not crash, block or throw across this boundary: it runs
 *   inside the gateway's process and on its event loops.
 * ------------------------------------------------------------------------- */
#ifndef MESHGATE_FILTER_H
#define MESHGATE_FILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_ABI_MAJOR 1
#define MG_ABI_MINOR 3

/* The one symbol a plugin exports: `const mg_plugin *meshgate_plugin_v1(const mg_host *host)`. */
#define MG_PLUGIN_ENTRY_V1 "meshgate_plugin_v1"

/* ---------------------------------------------------------------- basics -- */

/* A byte string: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct mg_str {
    const char *ptr;
    size_t len;
} mg_str;

/* gRPC status codes as numbers (0 OK ... 16 UNAUTHENTICATED). */
enum {
    MG_STATUS_OK = 0,
    MG_STATUS_CANCELLED = 1,
    MG_STATUS_UNKNOWN = 2,
    MG_STATUS_INVALID_ARGUMENT = 3,
    MG_STATUS_DEADLINE_EXCEEDED = 4,
    MG_STATUS_NOT_FOUND = 5,
    MG_STATUS_PERMISSION_DENIED = 7,
    MG_STATUS_RESOURCE_EXHAUSTED = 8,
    MG_STATUS_UNIMPLEMENTED = 12,
    MG_STATUS_INTERNAL = 13,
    MG_STATUS_UNAVAILABLE = 14,
    MG_STATUS_UNAUTHENTICATED = 16
};

/* What a plugin offers (mg_plugin.kinds, bit flags). A chain holds at most
 * one balancer, and at most one plugin that schedules further attempts. */
enum {
    MG_KIND_FILTER = 1u << 0,   /* request/response hooks (a balancer that is also a
                                   filter gets them at its place in the chain) */
    MG_KIND_BALANCER = 1u << 1, /* lb_pick / lb_update */
    MG_KIND_RETRY = 1u << 2,    /* decides retries in on_attempt_done */
    MG_KIND_HEDGE = 1u << 3     /* starts extra attempts with call_start_attempt */
};

/* Opaque handles owned by the host. */
typedef struct mg_call mg_call;             /* one RPC through the gateway */
typedef struct mg_attempt mg_attempt;       /* one upstream attempt of a call */
typedef struct mg_config_ctx mg_config_ctx; /* the host's side of one config */

/* Log levels for mg_host.log. */
enum { MG_LOG_DEBUG = 0, MG_LOG_INFO = 1, MG_LOG_WARNING = 2, MG_LOG_ERROR = 3 };

/* ------------------------------------------------------------- endpoints -- */

/* One upstream endpoint as one event loop sees it. */
typedef struct mg_endpoint {
    mg_str address;     /* "host:port" */
    uint64_t id;        /* stable while the endpoint stays in the cluster */
    uint32_t weight;    /* >= 1 */
    uint32_t in_flight; /* attempts in flight to it from this event loop */
    uint8_t healthy;    /* 0 when active health checks fail it, or when this
                           loop cannot connect to it right now (backoff) */
    uint8_t ejected;    /* 1 while outlier detection ejects it */
    uint8_t reserved[6];
} mg_endpoint;

/* Since 1.2: one `key: value` label of an endpoint, from its discovery
 * source (etcd value, endpoints file) or its `metadata:` in the config. */
typedef struct mg_metadata_entry {
    mg_str key;
    mg_str value;
} mg_metadata_entry;

/* Since 1.2: an endpoint's labels, sorted by key (no key twice). */
typedef struct mg_endpoint_metadata {
    const mg_metadata_entry *entries;
    size_t count;
} mg_endpoint_metadata;

/* A cluster's endpoints. `version` changes whenever membership, weight,
 * health or ejection changes. Balancers skip endpoints with healthy == 0 or
 * ejected == 1 (outlier detection bounds how many it ejects; when nothing
 * usable is left the pick fails and the call gets UNAVAILABLE). Endpoint ids
 * derive from the address: the same endpoint has the same id on every loop
 * and across reloads. */
typedef struct mg_endpoint_list {
    mg_str cluster;
    const mg_endpoint *items;
    size_t count;
    uint64_t version;
    /* Since 1.2, read only when the host's abi_minor >= 2 (an older host
     * does not have this field): metadata[i] labels items[i]. Valid, like
     * the list, until the hook returns. */
    const mg_endpoint_metadata *metadata;
} mg_endpoint_list;

/* What a pick is for. */
typedef struct mg_pick_request {
    uint32_t size;            /* sizeof(mg_pick_request) as the host built it */
    uint32_t attempt;         /* 0 for the first attempt, then 1, 2, ... */
    uint64_t avoid_endpoint;  /* id of an endpoint to avoid when another
                                 exists (the one that just failed); 0 = none */
} mg_pick_request;

/* -------------------------------------------------------------- outcomes -- */

typedef struct mg_attempt_result {
    uint32_t size;              /* sizeof(mg_attempt_result) as the host built it */
    uint32_t attempt;           /* 0 = first */
    int32_t grpc_status;        /* from trailers or Trailers-Only, or mapped from a reset */
    mg_str grpc_message;
    uint64_t endpoint_id;
    uint64_t latency_us;        /* attempt start to end */
    uint8_t response_started;   /* the call had committed to this attempt */
    uint8_t transport_failure;  /* reset, refused or lost connection (no status from the server) */
    uint8_t transparent_retry_ok; /* REFUSED_STREAM / GOAWAY-unprocessed: nothing reached the server */
    uint8_t reserved;
    int64_t pushback_ms;        /* grpc-retry-pushback-ms: -1 absent, -2 present but invalid */
} mg_attempt_result;

/* on_attempt_done's answer for an attempt that ended before the call
 * committed to it (see on_attempt_done). The host sets `retry` to
 * MG_RETRY_NO before the hooks run. */
enum {
    MG_RETRY_NO = 0,     /* no new attempt for this one: the call ends with
                            this result unless other attempts are in flight
                            or scheduled */
    MG_RETRY_AFTER = 1,  /* start another attempt after delay_ms (it replaces
                            an attempt already scheduled, if any) */
    MG_RETRY_FINISH = 2  /* end the call with this result now and cancel
                            every other attempt (a hedge's fatal status) */
};

typedef struct mg_retry_decision {
    uint32_t retry;             /* MG_RETRY_* */
    uint32_t delay_ms;          /* with MG_RETRY_AFTER */
} mg_retry_decision;

typedef struct mg_call_result {
    uint32_t size;
    int32_t grpc_status;
    mg_str grpc_message;
    uint32_t attempts;
    uint64_t duration_us;       /* request headers in to final status out */
    uint64_t request_bytes;     /* DATA bytes received from the client (gRPC framing included) */
    uint64_t response_bytes;    /* DATA bytes sent to the client (gRPC framing included) */
} mg_call_result;

/* Since 1.3: how a shadow call (call_start_shadow) ended. */
typedef struct mg_shadow_result {
    uint32_t size;              /* sizeof(mg_shadow_result) as the host built it */
    int32_t grpc_status;        /* the shadow's status (from its trailers, or mapped
                                   from a reset); CANCELLED when abandoned */
    mg_str cluster;
    uint64_t latency_us;        /* shadow start to end */
    uint8_t abandoned;          /* the host gave up on it: buffer full, timeout,
                                   or the client cancelled the call */
    uint8_t transport_failure;  /* no connection, or reset/lost without a status */
    uint8_t reserved[6];
} mg_shadow_result;

/* Request hook results. */
typedef enum mg_action {
    MG_CONTINUE = 0,    /* go on with the chain */
    MG_LOCAL_REPLY = 1  /* the plugin called call_local_reply: stop, answer the client */
} mg_action;

/* -------------------------------------------------------------- host API -- */

/* Functions the host offers. All are present in every v1 host; fields are
 * only ever appended (check `size` before using a field of a later minor). */
typedef struct mg_host {
    uint32_t size;
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t reserved;

    /* Any thread, any time. The host copies the message. */
    void (*log)(int level, mg_str plugin, mg_str message);

    /* The call's method, "/package.Service/Method". */
    mg_str (*call_method)(const mg_call *call);

    /* The `index`-th value (0-based) of request header `name` (lower-case).
     * Returns 1 and fills *value, or 0 when absent. */
    int (*call_request_header)(const mg_call *call, mg_str name, size_t index, mg_str *value);

    /* From on_request_headers: answer the call locally with a status
     * (Trailers-Only); return MG_LOCAL_REPLY from the hook. Since 1.2 also
     * from lb_pick, before returning -1: the status the call ends with when
     * no other attempt is left. */
    void (*call_local_reply)(mg_call *call, int32_t grpc_status, mg_str message);

    /* Microseconds left before the call's deadline; UINT64_MAX when it has none. */
    uint64_t (*call_deadline_remaining_us)(const mg_call *call);

    /* From on_attempt_start only: add a header to the attempt's request
     * (e.g. traceparent); the name is lower-cased, and a field of that name
     * the client or the gateway set (grpc-timeout included) is replaced.
     * Returns 0, or -1 when the name or value is invalid (pseudo-headers,
     * connection-specific fields, control characters). */
    int (*attempt_set_request_header)(mg_attempt *attempt, mg_str name, mg_str value);

    /* From on_response_headers only: the `index`-th value of a response header. */
    int (*attempt_response_header)(const mg_attempt *attempt, mg_str name, size_t index, mg_str *value);

    /* From on_response_headers: add a header to the response the client
     * gets. Since 1.3 also from on_request_headers after call_local_reply:
     * the field goes into the local reply's Trailers-Only head (e.g.
     * grpc-retry-pushback-ms). Returns 0, or -1 when called elsewhere or
     * the name or value is invalid. */
    int (*call_add_response_header)(mg_call *call, mg_str name, mg_str value);

    /* MG_KIND_HEDGE, from on_request_headers, on_attempt_start or
     * on_attempt_done: schedule one more attempt of the call after delay_ms
     * (0 = as soon as the hook returns). At most one attempt is scheduled at
     * a time: a new call replaces the pending one. Returns 0, or -1 when no
     * more attempts are possible (committed, finished, or the request outgrew
     * the replay buffer). The first attempt whose response headers arrive
     * wins; the host cancels the others (RST_STREAM CANCEL) and drops the
     * scheduled one. */
    int (*call_start_attempt)(mg_call *call, uint32_t delay_ms);

    /* From any hook of the call: cancel every attempt in flight but `keep`
     * (may be NULL), and the scheduled one. Cancelled attempts still get
     * on_attempt_done (CANCELLED), after the current hook has returned. */
    void (*call_cancel_attempts)(mg_call *call, const mg_attempt *keep);

    /* Control thread, from config_new or a timer of the config: run `fire`
     * on the control thread after delay_ms, repeatedly when repeat != 0.
     * Returns a timer id (> 0), or 0 when ctx is not usable. Every timer of a
     * config is cancelled before its config_destroy, which also runs on the
     * control thread, so `fire` never races with it. */
    uint64_t (*timer_start)(mg_config_ctx *ctx, uint32_t delay_ms, int repeat, void (*fire)(void *user), void *user);
    void (*timer_cancel)(mg_config_ctx *ctx, uint64_t timer_id);

    /* Any thread, while the config exists: eject endpoint `endpoint_id` of
     * `cluster` from every balancer of every loop for duration_ms (0 =
     * uneject now). The host keeps the ejection (it survives a hot swap of
     * the plugin) and ends it by itself when the time is up. Returns 0, or
     * -1 when the cluster or endpoint is unknown. Takes effect on each event
     * loop shortly after (not within the calling hook). */
    int (*endpoint_eject)(mg_config_ctx *ctx, mg_str cluster, uint64_t endpoint_id, uint32_t duration_ms);

    /* From any hook that received the attempt: its number in the call (0 =
     * first; retries and hedges count up; a transparent retry of a refused
     * stream gets a number too). */
    uint32_t (*attempt_number)(const mg_attempt *attempt);

    /* From any hook that received the attempt: the endpoint it goes to.
     * Fills *id and *address ("host:port", valid until the call ends);
     * returns 1, or 0 before an endpoint is chosen. */
    int (*attempt_endpoint)(const mg_attempt *attempt, uint64_t *id, mg_str *address);

    /* ---- since 1.1 (check size >= offsetof(mg_host, call_set_log_field) + sizeof(void *)) ---- */

    /* From any hook of the call, on_call_done included: set field `key` of
     * the call's access-log line to `value` (e.g. trace_id and span_id from
     * a tracing filter). The host copies both; a key set again keeps the
     * last value. When the access log is off the host drops the field
     * before copying anything, so a filter need not check. Returns 0, or -1
     * when the key is empty, longer than 64 bytes, or one the host writes
     * itself (ts, level, msg). */
    int (*call_set_log_field)(mg_call *call, mg_str key, mg_str value);

    /* Any thread: declare a Prometheus counter the plugin adds to, shown on
     * the admin /metrics. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* and
     * should end in _total; `labels` is `key="value",...` (or empty);
     * `help` is one line. Declaring the same name and labels again (another
     * config, a reload, a hot-swapped image) returns the same counter, so
     * counts survive reloads. Returns an id > 0, or 0 when the name or labels
     * are invalid or the host's table of counters (4096) is full. Cheap but
     * takes a lock: declare once (config_new, instance_new), not per call. */
    uint64_t (*counter_declare)(mg_str name, mg_str help, mg_str labels);

    /* Any thread, any time: add `delta` to a declared counter (one relaxed
     * atomic add, no lock). An id of 0 is ignored. */
    void (*counter_add)(uint64_t counter_id, uint64_t delta);

    /* ---- since 1.2 (check size >= offsetof(mg_host, attempt_endpoint_metadata) + sizeof(void *)) ---- */

    /* From on_attempt_start, on_response_headers or on_attempt_done: the
     * value of label `key` of the attempt's endpoint. Returns 1 and sets
     * *value (valid until the hook returns), or 0 when the endpoint has no
     * such label or none is chosen yet. */
    int (*attempt_endpoint_metadata)(const mg_attempt *attempt, mg_str key, mg_str *value);

    /* ---- since 1.3 (check size >= offsetof(mg_host, call_start_shadow) + sizeof(void *)) ---- */

    /* From any hook of the call: the client's address, "ip:port" (IPv6 as
     * "[addr]:port"), valid until the call ends. Returns 1 and sets
     * *address, or 0 when the host does not know it. */
    int (*call_peer_address)(const mg_call *call, mg_str *address);

    /* From on_request_headers: send a copy of the call ("shadow") to
     * `cluster` and drop its response (traffic mirroring). The shadow gets
     * the client's request head with ":authority" suffixed "-shadow" (as
     * Envoy does), the call's remaining deadline as grpc-timeout, and every
     * request byte the client sends; its endpoint is chosen round robin
     * among the cluster's healthy, non-ejected endpoints on the call's loop
     * (no balancer plugin is asked). The shadow never affects the call:
     * request bytes the shadow has not taken are buffered up to
     * `max_buffer_bytes` (0 = 64 KiB), beyond which the shadow is abandoned
     * (RST_STREAM CANCEL); so it is after `timeout_ms` (0 = 10 s), or when
     * the client cancels before its request ended. Its response is read and
     * discarded as it arrives.
     * `done` (may be NULL) runs once, on the call's loop, when the shadow
     * ended, possibly after the call ended (then without the call's
     * handle): `result` is valid during `done`; `user` is the plugin's. The
     * host keeps the call's config and instances alive until every shadow
     * of the call has ended, so `user` may be the instance.
     * Returns 0, or -1 when the cluster is unknown, has no usable endpoint,
     * or the function is called from another hook (then `done` never runs). */
    int (*call_start_shadow)(mg_call *call, mg_str cluster, uint32_t timeout_ms, uint32_t max_buffer_bytes,
                             void (*done)(void *user, const struct mg_shadow_result *result), void *user);
} mg_host;

/* ------------------------------------------------------------ plugin API -- */

/* What the entry returns: the plugin's identity and hooks. Any hook may be
 * NULL ("not implemented: default behaviour"); hooks of a later minor are
 * only ever optional. */
typedef struct mg_plugin {
    uint32_t size;          /* sizeof(mg_plugin) as the plugin was compiled */
    uint32_t abi_major;     /* must equal the host's MG_ABI_MAJOR */
    uint32_t abi_minor;     /* the host must offer at least this minor */
    uint32_t kinds;         /* MG_KIND_* flags */
    const char *name;       /* NUL-terminated, static */
    const char *version;    /* NUL-terminated, static, free form */

    /* Control thread. Validate and compile `config_json` (the route's
     * `config:` block as JSON text, "{}" when absent). Return the config (any
     * non-NULL pointer when the plugin keeps no config state), or NULL after
     * writing a NUL-terminated reason into error[error_size]; the host then
     * refuses the whole config or reload and shows the reason. */
    void *(*config_new)(mg_config_ctx *ctx, mg_str config_json, char *error, size_t error_size);
    void (*config_destroy)(void *config);

    /* The config's loop-local state for one cluster (`cluster` is its name,
     * valid during the hook); loop_index is 0..loops-1. NULL return is
     * allowed (no state). State shared by the loops of one cluster (a
     * breaker's counters, a retry budget) belongs in the config, found or
     * made here under the plugin's own lock, then updated with atomics. */
    void *(*instance_new)(void *config, uint32_t loop_index, mg_str cluster);
    void (*instance_destroy)(void *instance);

    /* Per call. call_new may return NULL (no state). */
    void *(*call_new)(void *instance, mg_call *call);
    void (*call_destroy)(void *instance, void *call_state);

    /* The request head arrived. Return MG_LOCAL_REPLY after
     * call_local_reply to answer without going upstream. */
    mg_action (*on_request_headers)(void *instance, void *call_state, mg_call *call);

    /* An attempt is about to be sent upstream (its headers are still
     * writable with attempt_set_request_header). */
    void (*on_attempt_start)(void *instance, void *call_state, mg_call *call, mg_attempt *attempt);

    /* The call committed to this attempt: its response headers go to the
     * client when the hooks return (see on_attempt_done for when). */
    void (*on_response_headers)(void *instance, void *call_state, mg_call *call, mg_attempt *attempt);

    /* An attempt that got on_attempt_start ended, every attempt exactly once
     * and always before on_call_done.
     * `decision` is non-NULL when the attempt ended before the call committed
     * to it and another attempt is possible (not committed, not finished, the
     * request still in the replay buffer). The host calls the chain's
     * MG_KIND_RETRY or MG_KIND_HEDGE plugin first, which sets decision->retry;
     * then the other filters in chain order, which may only lower it to
     * MG_RETRY_NO (a circuit breaker's retry limit). Without such a plugin the
     * call ends with the attempt's result.
     * An attempt commits when its response headers arrive (hedging, or no
     * retry plugin), or with a retry plugin when its first response message
     * arrives: a status in trailers after headers without any message can
     * still be retried. Trailers-Only never commits. A refused stream
     * (transparent_retry_ok) is retried once by the host itself, before and
     * without asking the plugins (decision is NULL then). */
    void (*on_attempt_done)(void *instance, void *call_state, mg_call *call,
                            const mg_attempt_result *result, mg_retry_decision *decision);

    /* The client has its final status. */
    void (*on_call_done)(void *instance, void *call_state, mg_call *call, const mg_call_result *result);

    /* MG_KIND_BALANCER: the endpoint list changed (called before the next
     * pick that sees the new version). */
    void (*lb_update)(void *instance, const mg_endpoint_list *endpoints);

    /* MG_KIND_BALANCER: choose an endpoint for an attempt. Write its index
     * into *chosen and return 0; return -1 when none fits (the call gets
     * UNAVAILABLE; since 1.2, the status and message of a call_local_reply
     * made in this hook, when there is one). */
    int (*lb_pick)(void *instance, mg_call *call, const mg_pick_request *request,
                   const mg_endpoint_list *endpoints, uint32_t *chosen);
} mg_plugin;

/* The entry's type. Called once per load, on the control thread; `host` stays
 * valid until the process exits. Return NULL to refuse loading (for example
 * when host->abi_minor is too old). */
typedef const mg_plugin *(*mg_plugin_entry_v1)(const mg_host *host);

#ifdef __cplusplus
}
#endif

#endif /* MESHGATE_FILTER_H */
