/*
 * cmd_serve.c - `v4flash serve -m MODEL`: an OpenAI-compatible HTTP server
 * for coding agents and chat front ends.
 *
 *   GET  /health                  {"status": "ok"}
 *   GET  /v1/models[/ID]          the one model (id deepseek-v4-flash)
 *   POST /v1/chat/completions     chat (tools as DSML, reasoning_content, SSE streaming)
 *   POST /v1/completions          raw text continuation
 *   POST /v1/messages             Anthropic Messages (Claude Code); /count_tokens
 *
 * HTTP is libmicrohttpd (thread per connection). A connection thread reads
 * and validates a request (JSON, chat template, token count), then queues a
 * job; the main thread is the worker that owns the one model session and
 * runs the jobs in order (src/server/srv.h reuses the KV of the previous
 * request where the new prompt starts the same way). A streaming response
 * reads the job's events as the worker appends them (an SSE comment every
 * few seconds while nothing comes, so idle clients and proxies keep the
 * connection); a client that goes away cancels its job at the next token.
 *
 * SIGINT / SIGTERM: the running job stops (its client gets an error event or
 * 503), queued ones get 503, the listener closes, exit 0.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "backend_opts.h"
#include "cli.h"
#include "cli_model.h"
#include "engine/kvcache.h"
#include "json/json.h"
#include "model/forward.h"
#include "server/oai.h"
#include "tokenizer/chat.h"
#include "server/srv.h"
#include "tokenizer/tokenizer.h"

#ifdef V4F_HAVE_MHD
#include <microhttpd.h>

#define KEEPALIVE_S 5            /* SSE comment after this many idle seconds */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* pthread_cond_timedwait for at most ms milliseconds; true on a timeout */
static bool cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT;
}

typedef struct job job;
struct job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    v4f_oai_req req;
    char *prompt;
    size_t prompt_len;
    v4f_tok_ids ids;   /* the prompt's tokens, encoded by the connection thread */
    v4f_json_buf out;  /* stream: events so far; else the response body */
    size_t out_off;    /* stream: bytes handed to MHD */
    int status;        /* non-stream: HTTP status of out */
    bool done, gone;
    job *next;
    struct server *sv;
};

typedef struct server server;
struct server {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    bool closing;
    int active; /* responses that read a job (streams until MHD frees them) */
    const char *api_key;
    bool cors;
    size_t max_body;
    uint32_t n_ctx;
    int64_t created;
    uint64_t default_max;
    v4f_oai_defaults defaults;
    const v4f_tok *tok;
    bool quiet;
};

static void active_add(server *sv, int d) {
    pthread_mutex_lock(&sv->mu);
    sv->active += d;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

typedef struct conn {
    v4f_json_buf body;
    bool too_large;
} conn;

static void job_unref(job *j) {
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    v4f_oai_req_free(&j->req);
    free(j->prompt);
    v4f_tok_ids_free(&j->ids);
    v4f_json_buf_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* A job that was never queued (its lock and buffers not set up yet). */
static void job_discard(job *j) {
    v4f_oai_req_free(&j->req);
    free(j->prompt);
    v4f_tok_ids_free(&j->ids);
    free(j);
}

/* ---- responses ----------------------------------------------------------------- */

static void add_common_headers(const server *sv, struct MHD_Response *r, const char *type) {
    if (type) MHD_add_response_header(r, "Content-Type", type);
    if (sv->cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    }
}

static enum MHD_Result respond(const server *sv, struct MHD_Connection *c, unsigned status, const char *body,
                               size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    add_common_headers(sv, r, "application/json");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond_error_for(const server *sv, struct MHD_Connection *c, v4f_oai_kind kind,
                                         unsigned status, const char *msg, const char *type, const char *code) {
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_oai_error_json_for(kind, &b, msg, type, code);
    enum MHD_Result ok = respond(sv, c, status, b.data, b.len);
    v4f_json_buf_free(&b);
    return ok;
}

static enum MHD_Result respond_error(const server *sv, struct MHD_Connection *c, unsigned status, const char *msg,
                                     const char *type, const char *code) {
    return respond_error_for(sv, c, V4F_OAI_CHAT, status, msg, type, code);
}

/* ---- streaming -------------------------------------------------------------------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->out_off == j->out.len && !j->done) {
        if (cond_wait_ms(&j->cv, &j->mu, KEEPALIVE_S * 1000L) && j->out_off == j->out.len && !j->done) {
            pthread_mutex_unlock(&j->mu);
            static const char ka[] = ": keep-alive\n\n";
            size_t n = sizeof ka - 1 < max ? sizeof ka - 1 : max;
            memcpy(buf, ka, n);
            return (ssize_t)n;
        }
    }
    if (j->out_off == j->out.len) {
        pthread_mutex_unlock(&j->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = j->out.len - j->out_off < max ? j->out.len - j->out_off : max;
    memcpy(buf, j->out.data + j->out_off, n);
    j->out_off += n;
    pthread_mutex_unlock(&j->mu);
    return (ssize_t)n;
}

/* MHD is done with the stream (sent, or the client went away). */
static void stream_free(void *cls) {
    job *j = cls;
    server *sv = j->sv;
    pthread_mutex_lock(&j->mu);
    j->gone = true;
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    active_add(sv, -1);
}

/* ---- request handling --------------------------------------------------------------- */

static bool authorized(const server *sv, struct MHD_Connection *c) {
    if (!sv->api_key) return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (a && !strncmp(a, "Bearer ", 7) && !strcmp(a + 7, sv->api_key)) return true;
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    return x && !strcmp(x, sv->api_key);
}

/* Whether the peer closed its side (a non-streaming client that gave up). */
static bool peer_closed(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static enum MHD_Result handle_generate(server *sv, struct MHD_Connection *c, v4f_oai_kind kind, conn *cc,
                                       bool count_only) {
    job *j = v4f_xmalloc(sizeof *j);
    memset(j, 0, sizeof *j);
    v4f_err err = {0};
    if (v4f_oai_parse(kind, cc->body.len ? cc->body.data : "", cc->body.len, &sv->defaults, &j->req, &err)) {
        free(j);
        return respond_error_for(sv, c, kind, 400, err.msg, "invalid_request_error", NULL);
    }
    if (v4f_oai_prompt(&j->req, &j->prompt, &j->prompt_len, &err) ||
        v4f_tok_encode(sv->tok, j->prompt, j->prompt_len, V4F_TOK_ENC_SPECIAL, &j->ids, &err)) {
        job_discard(j);
        return respond_error_for(sv, c, kind, 400, err.msg, "invalid_request_error", NULL);
    }
    if (count_only) { /* /v1/messages/count_tokens */
        char out[64];
        int n = snprintf(out, sizeof out, "{\"input_tokens\":%zu}", j->ids.n);
        job_discard(j);
        return respond(sv, c, 200, out, (size_t)n);
    }
    if (j->ids.n >= sv->n_ctx) {
        char msg[160];
        snprintf(msg, sizeof msg, "the prompt has %zu tokens; this server's context holds %u (--ctx)", j->ids.n,
                 sv->n_ctx);
        job_discard(j);
        return respond_error_for(sv, c, kind, 400, msg, "invalid_request_error", "context_length_exceeded");
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    v4f_json_buf_init(&j->out);
    j->refs = 2; /* the queue/worker and this connection */
    j->sv = sv;
    pthread_mutex_lock(&sv->mu);
    bool closing = sv->closing;
    if (!closing) {
        sv->active++;
        if (sv->tail) sv->tail->next = j;
        else sv->head = j;
        sv->tail = j;
        pthread_cond_signal(&sv->cv);
    }
    pthread_mutex_unlock(&sv->mu);
    if (closing) {
        j->refs = 1;
        job_unref(j);
        return respond_error_for(sv, c, kind, 503, "the server is shutting down",
                                 kind == V4F_OAI_MESSAGES ? "overloaded_error" : "server_error", NULL);
    }
    if (j->req.stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, j, stream_free);
        if (!r) {
            stream_free(j);
            return MHD_NO;
        }
        add_common_headers(sv, r, "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        cond_wait_ms(&j->cv, &j->mu, 1000);
        if (!j->done && !j->gone && peer_closed(c)) j->gone = true; /* cancels the job */
    }
    pthread_mutex_unlock(&j->mu);
    enum MHD_Result ok = respond(sv, c, (unsigned)j->status, j->out.data ? j->out.data : "", j->out.len);
    job_unref(j);
    active_add(sv, -1);
    return ok;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    server *sv = cls;
    conn *cc = *con_cls;
    if (!cc) { /* headers only so far */
        cc = v4f_xmalloc(sizeof *cc);
        memset(cc, 0, sizeof *cc);
        v4f_json_buf_init(&cc->body);
        *con_cls = cc;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cc->body.len + *upload_size > sv->max_body) cc->too_large = true;
        else v4f_json_buf_append(&cc->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        add_common_headers(sv, r, NULL);
        enum MHD_Result ok = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (!strcmp(url, "/health")) {
        if (!get) return respond_error(sv, c, 405, "use GET", "invalid_request_error", NULL);
        static const char ok[] = "{\"status\":\"ok\"}";
        return respond(sv, c, 200, ok, sizeof ok - 1);
    }
    if (!authorized(sv, c))
        return respond_error_for(sv, c, strncmp(url, "/v1/messages", 12) ? V4F_OAI_CHAT : V4F_OAI_MESSAGES, 401,
                                 "missing or wrong API key (Authorization: Bearer KEY or x-api-key: KEY)",
                                 "authentication_error", "invalid_api_key");
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
        if (!get) return respond_error(sv, c, 405, "use GET", "invalid_request_error", NULL);
        const bool list = url[10] == 0;
        if (!list && strcmp(url + 11, V4F_OAI_MODEL_ID))
            return respond_error(sv, c, 404, "no such model; this server has " V4F_OAI_MODEL_ID,
                                 "invalid_request_error", "model_not_found");
        v4f_json_buf b;
        v4f_json_buf_init(&b);
        v4f_oai_models_json(&b, sv->n_ctx, sv->created, list);
        enum MHD_Result ok = respond(sv, c, 200, b.data, b.len);
        v4f_json_buf_free(&b);
        return ok;
    }
    const bool chat = !strcmp(url, "/v1/chat/completions"), compl = !strcmp(url, "/v1/completions"),
               msgs = !strcmp(url, "/v1/messages"), count = !strcmp(url, "/v1/messages/count_tokens");
    if (chat || compl || msgs || count) {
        const v4f_oai_kind kind = chat ? V4F_OAI_CHAT : compl ? V4F_OAI_COMPLETION : V4F_OAI_MESSAGES;
        if (!post) return respond_error_for(sv, c, kind, 405, "use POST", "invalid_request_error", NULL);
        if (cc->too_large) {
            char msg[96];
            snprintf(msg, sizeof msg, "the body exceeds %zu MiB (--max-body-mb)", sv->max_body >> 20);
            return respond_error_for(sv, c, kind, 413, msg, "invalid_request_error", NULL);
        }
        return handle_generate(sv, c, kind, cc, count);
    }
    return respond_error(sv, c, 404, "unknown endpoint", "invalid_request_error", NULL);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn *cc = *con_cls;
    if (!cc) return;
    v4f_json_buf_free(&cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ---- the worker -------------------------------------------------------------------- */

typedef struct run_ctx {
    job *j;
    v4f_oai_out *o;
    v4f_json_buf ev;
} run_ctx;

static bool run_text(void *ud, const char *s, size_t n) {
    run_ctx *rc = ud;
    rc->ev.len = 0;
    bool go = v4f_oai_out_feed(rc->o, s, n, &rc->ev);
    if (rc->ev.len) {
        pthread_mutex_lock(&rc->j->mu);
        v4f_json_buf_append(&rc->j->out, rc->ev.data, rc->ev.len);
        pthread_cond_broadcast(&rc->j->cv);
        pthread_mutex_unlock(&rc->j->mu);
    }
    return go;
}

static void run_prefilled(void *ud, uint32_t n_prompt, uint32_t n_cached) {
    run_ctx *rc = ud;
    v4f_oai_out_prompt_usage(rc->o, n_prompt, n_cached);
}

static bool run_cancelled(void *ud) {
    run_ctx *rc = ud;
    pthread_mutex_lock(&rc->j->mu);
    bool gone = rc->j->gone;
    pthread_mutex_unlock(&rc->j->mu);
    return gone || g_stop;
}

static void finish_job(job *j, int status, const v4f_json_buf *body) {
    pthread_mutex_lock(&j->mu);
    if (body && body->len) v4f_json_buf_append(&j->out, body->data, body->len);
    j->status = status;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void fail_job(job *j, int status, const char *msg, const char *type) {
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    const bool anth = j->req.kind == V4F_OAI_MESSAGES;
    if (j->req.stream) v4f_json_buf_puts(&b, anth ? "event: error\ndata: " : "data: ");
    v4f_oai_error_json_for(j->req.kind, &b, msg, type, NULL);
    if (j->req.stream) v4f_json_buf_puts(&b, anth ? "\n\n" : "\n\ndata: [DONE]\n\n");
    finish_job(j, status, &b);
    v4f_json_buf_free(&b);
}

static void run_job(server *sv, v4f_srv *w, job *j) {
    pthread_mutex_lock(&j->mu);
    const bool gone = j->gone;
    pthread_mutex_unlock(&j->mu);
    if (gone) { /* the client left while the request waited: the KV stays as it is */
        fail_job(j, 503, "cancelled", "server_error");
        if (!sv->quiet) fprintf(stderr, "serve: request cancelled before it started\n");
        return;
    }
    char id[64];
    v4f_oai_random_id(id, sizeof id,
                      j->req.kind == V4F_OAI_CHAT ? "chatcmpl-" : j->req.kind == V4F_OAI_MESSAGES ? "msg_" : "cmpl-");
    run_ctx rc = {.j = j, .o = v4f_oai_out_new(&j->req, id, (int64_t)time(NULL))};
    v4f_json_buf_init(&rc.ev);
    v4f_srv_job sj = {.prompt = j->prompt, .prompt_len = j->prompt_len, .ids = j->ids.ids, .n_ids = j->ids.n,
                      .emit_eos = j->req.kind != V4F_OAI_COMPLETION};
    sj.sp = v4f_sampler_params_default();
    sj.sp.temperature = j->req.temperature;
    sj.sp.top_p = j->req.top_p;
    sj.sp.min_p = j->req.min_p;
    sj.sp.top_k = j->req.top_k;
    if (j->req.seed_given) {
        sj.sp.seed = j->req.seed;
    } else {
        char r[24];
        v4f_oai_random_id(r, sizeof r, "");
        sj.sp.seed = strtoull(r, NULL, 16);
    }
    sj.max_tokens = j->req.max_tokens > 0 ? (uint64_t)j->req.max_tokens : sv->default_max;
    const v4f_srv_sink sink = {.ud = &rc, .text = run_text, .cancelled = run_cancelled, .prefilled = run_prefilled};
    v4f_srv_result res;
    v4f_err err = {0};
    v4f_status st = v4f_srv_generate(w, &sj, &sink, &res, &err);
    if (st) {
        fail_job(j, st == V4F_STATUS_RANGE ? 400 : 500, err.msg,
                 st == V4F_STATUS_RANGE ? "invalid_request_error" : "server_error");
        fprintf(stderr, "serve: request failed: %s\n", err.msg);
    } else if (!strcmp(res.end, "cancelled")) {
        fail_job(j, 503, g_stop ? "the server is shutting down" : "cancelled", "server_error");
        if (!sv->quiet) fprintf(stderr, "serve: request cancelled after %llu tokens\n", (unsigned long long)res.n_gen);
    } else {
        v4f_oai_usage u = {.prompt_tokens = res.n_prompt, .completion_tokens = res.n_gen, .cached_tokens = res.n_cached};
        rc.ev.len = 0;
        v4f_oai_out_finish(rc.o, res.end, &u, &rc.ev);
        finish_job(j, 200, &rc.ev);
        if (!sv->quiet) {
            const uint32_t fresh = res.n_prompt - res.n_cached;
            char drafts[96] = "";
            if (res.drafted)
                snprintf(drafts, sizeof drafts, ", MTP drafts %llu of %llu kept, %llu tokens paused",
                         (unsigned long long)res.accepted, (unsigned long long)res.drafted,
                         (unsigned long long)res.paused);
            fprintf(stderr,
                    "serve: %s: prompt %u tokens (%u cached, %s), prefill %.1f t/s; %llu generated (%s) at %.1f t/s%s\n",
                    j->req.kind == V4F_OAI_CHAT ? "chat" : j->req.kind == V4F_OAI_MESSAGES ? "messages" : "completion",
                    res.n_prompt, res.n_cached, res.cache,
                    res.t_prefill > 0 ? fresh / res.t_prefill : 0.0, (unsigned long long)res.n_gen,
                    v4f_oai_out_finish_reason(rc.o), res.t_gen > 0 ? res.n_gen / res.t_gen : 0.0, drafts);
        }
    }
    v4f_json_buf_free(&rc.ev);
    v4f_oai_out_free(rc.o);
}

static job *next_job(server *sv) {
    pthread_mutex_lock(&sv->mu);
    while (!sv->head && !g_stop) cond_wait_ms(&sv->cv, &sv->mu, 200); /* g_stop is polled */
    job *j = NULL;
    if (!g_stop && sv->head) {
        j = sv->head;
        sv->head = j->next;
        if (!sv->head) sv->tail = NULL;
    }
    pthread_mutex_unlock(&sv->mu);
    return j;
}

/* Listening address: host (numeric or a name) and port. */
static int resolve(const char *host, int port, struct sockaddr_storage *ss, bool *v6) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int e = getaddrinfo(host, ps, &hints, &res);
    if (e) {
        fprintf(stderr, "v4flash serve: --host %s: %s\n", host, gai_strerror(e));
        return 2;
    }
    const struct addrinfo *a = res; /* IPv4 first ("localhost" often lists ::1 first) */
    for (const struct addrinfo *x = res; x; x = x->ai_next)
        if (x->ai_family == AF_INET) {
            a = x;
            break;
        }
    memcpy(ss, a->ai_addr, a->ai_addrlen);
    *v6 = a->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

int cmd_serve(int argc, char **argv) {
    const char *model = "ds4flash.gguf", *synthetic = NULL, *host = "127.0.0.1", *api_key = NULL, *mtp = NULL;
    const char *precision = "default";
    int port = 8000, threads = 0;
    int64_t n_ctx = 32768, n_max = 0, max_body_mb = 64, snapshot_min = 512;
    int64_t kv_space_mb = 0, kv_min_tokens = 512;
    const char *kv_dir = NULL;
    bool no_think = false, cors = false, quiet = false, kv_share_family = false;
    float temp = 1.0f, top_p = 1.0f, min_p = 0.05f;
    int top_k = 0;
    uint64_t synth_seed = 1;
    v4f_cli_backend be = V4F_CLI_BACKEND_DEFAULT;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random-weight model built in memory (tests, speed)", NULL},
        {"synth-seed", 0, V4F_ARG_U64, &synth_seed, 0, 0, "S", "weights seed for --synthetic (1)", NULL},
        V4F_CLI_MTP_OPT(mtp),
        {"host", 0, V4F_ARG_STR, &host, 0, 0, "ADDR", "address to listen on (127.0.0.1; 0.0.0.0 or :: for all)", NULL},
        {"port", 0, V4F_ARG_INT32, &port, 0, 65535, "N", "TCP port (8000; 0 picks a free one)", NULL},
        {"api-key", 0, V4F_ARG_STR, &api_key, 0, 0, "KEY", "require Authorization: Bearer KEY on /v1 (default $V4F_API_KEY)", NULL},
        {"cors", 0, V4F_ARG_FLAG, &cors, 0, 0, NULL, "send Access-Control-Allow-* headers (browser clients)", NULL},
        {"ctx", 'c', V4F_ARG_INT, &n_ctx, 16, 1048576, "N", "context size (32768, max 1048576)", NULL},
        {"tokens", 'n', V4F_ARG_INT, &n_max, 0, 1 << 30, "N", "max_tokens when a request sends none (0: what the context holds)", NULL},
        {"no-think", 0, V4F_ARG_FLAG, &no_think, 0, 0, NULL, "chat without a reasoning phase unless a request asks", NULL},
        V4F_CLI_SAMPLING_OPTS("default ", temp, top_k, top_p, min_p),
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "CPU threads (default: all)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref (float32 KV)", NULL},
        {"max-body-mb", 0, V4F_ARG_INT, &max_body_mb, 1, 4096, "N", "largest request body in MiB (64)", NULL},
        {"snapshot-min", 0, V4F_ARG_INT, &snapshot_min, 0, 1 << 30, "N",
         "keep an in-memory snapshot of prompts of at least N tokens to resume the next request from (512; 0 = off; "
         "on a GPU only for prefills of more than two chunks, which it cannot rewind across)", NULL},
        {"kv-dir", 0, V4F_ARG_STR, &kv_dir, 0, 0, "DIR",
         "disk KV cache: resume the longest saved prefix of a prompt (after a restart, or a conversation another "
         "one displaced); saves per ds4's policy, before the live KV is displaced and on shutdown", NULL},
        {"kv-space-mb", 0, V4F_ARG_INT, &kv_space_mb, 0, 1LL << 40, "N", "disk KV cache budget in MiB (0 = unlimited)", NULL},
        {"kv-min-tokens", 0, V4F_ARG_INT, &kv_min_tokens, 1, 1 << 30, "N", "shortest prefix saved / reused (512)", NULL},
        {"kv-share-family", 0, V4F_ARG_FLAG, &kv_share_family, 0, 0, NULL, "also reuse checkpoints of other quantizations of this model", NULL},
        {"quiet", 'q', V4F_ARG_FLAG, &quiet, 0, 0, NULL, "no per-request or cache log lines (warnings and errors only)", NULL},
        V4F_CLI_BACKEND_OPTS(be),
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash serve",
        .synopsis = "[-m MODEL | --synthetic PRESET] [--host ADDR] [--port N] [options]",
        .about = "OpenAI-compatible HTTP server: POST /v1/chat/completions (tools, reasoning_content,\n"
                 "stream), POST /v1/completions, POST /v1/messages (Anthropic, Claude Code), GET /v1/models,\n"
                 "GET /health. One model session serves the requests in order and reuses the KV cache\n"
                 "of the previous request where the new prompt starts the same way\n"
                 "(usage.prompt_tokens_details.cached_tokens, Anthropic cache_read_input_tokens).",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    v4f_session_opts bso = {0};
    if (v4f_cli_backend_apply(&be, &spec, &bso)) return 2;
    if (strcmp(precision, "default") && strcmp(precision, "ref"))
        return v4f_args_fail(&spec, "--precision must be default or ref");
    if (quiet) v4f_log_set_level(V4F_LOG_WARN);
    if (!api_key) api_key = getenv("V4F_API_KEY");
    if (api_key && !*api_key) api_key = NULL;
    struct sockaddr_storage ss;
    bool v6 = false;
    if ((rc = resolve(host, port, &ss, &v6))) return rc;

    v4f_cli_model cm;
    rc = v4f_cli_model_open("v4flash serve", model, synthetic, mtp, synth_seed, threads, &cm);
    if (rc) return rc;
    rc = 1;
    v4f_err err = {0};
    v4f_tok *tok = NULL;
    v4f_session *s = NULL;
    v4f_srv *w = NULL;
    v4f_kvstore *kvs = NULL;
    v4f_kv_ident kvid;
    struct MHD_Daemon *d = NULL;
    server sv = {.api_key = api_key, .cors = cors, .max_body = (size_t)max_body_mb << 20, .n_ctx = (uint32_t)n_ctx,
                 .created = (int64_t)time(NULL), .default_max = (uint64_t)n_max, .quiet = quiet};
    pthread_mutex_init(&sv.mu, NULL);
    pthread_cond_init(&sv.cv, NULL);
    if (v4f_tok_from_gguf(cm.m->gguf, &tok, &err)) {
        fprintf(stderr, "v4flash serve: tokenizer: %s\n", err.msg);
        goto out;
    }
    v4f_session_opts so = bso; /* the backend choice */
    so.n_ctx = (uint32_t)n_ctx;
    so.n_threads = threads;
    so.precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
    v4f_cli_mtp_opts(mtp, &so);
    if (v4f_session_new(cm.m, &so, &s, &err)) {
        fprintf(stderr, "v4flash serve: session: %s\n", err.msg);
        goto out;
    }
    v4f_cli_backend_report(s);
    v4f_cli_mtp_note(s, mtp, "v4flash serve");
    v4f_srv_opts wo = {.n_vocab = cm.m->cfg.n_vocab, .snapshot_min = (uint32_t)snapshot_min};
    if (kv_dir) {
        v4f_kvstore_opts ko;
        v4f_kvstore_opts_default(&ko);
        ko.budget_bytes = (uint64_t)kv_space_mb << 20;
        ko.create = true;
        if (v4f_kvstore_open_opts(kv_dir, &ko, &kvs, &err)) {
            fprintf(stderr, "v4flash serve: --kv-dir %s: %s\n", kv_dir, err.msg);
            goto out;
        }
        v4f_kvcache_ident(cm.m, (uint32_t)n_ctx, so.precision != V4F_PRECISION_REF, false, &kvid);
        wo.kvs = kvs;
        wo.kv_id = &kvid;
        v4f_kv_policy_default(&wo.kv_pol);
        wo.kv_pol.min_tokens = (uint32_t)kv_min_tokens;
        wo.kv_allow_family = kv_share_family;
    }
    w = v4f_srv_new(s, tok, (uint32_t)n_ctx, &wo);
    sv.tok = tok;
    sv.defaults = (v4f_oai_defaults){.thinking = !no_think, .think_max_ok = n_ctx >= V4F_CHAT_THINK_MAX_MIN_CTX,
                                     .temperature = temp, .top_p = top_p, .min_p = min_p, .top_k = top_k};

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    /* connection threads must not take the signals: block them while MHD
     * starts its threads (they inherit the mask), then unblock here */
    sigset_t block, prev;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &prev);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_DUAL_STACK; /* "::" takes IPv4 clients too */
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handler, &sv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 600u,
                         MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    if (!d) {
        fprintf(stderr, "v4flash serve: cannot listen on %s port %d: %s\n", host, port,
                errno ? strerror(errno) : "libmicrohttpd refused");
        goto sigs;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const int bound = di ? di->port : port;
    fprintf(stderr, "v4flash serve: listening on http://%s%s%s:%d (model %s, ctx %lld%s%s%s)\n", v6 ? "[" : "",
            host, v6 ? "]" : "", bound, cm.desc, (long long)n_ctx, api_key ? ", API key required" : "",
            kv_dir ? ", kv cache " : "", kv_dir ? kv_dir : "");
    while (!g_stop) {
        job *j = next_job(&sv);
        if (!j) continue;
        run_job(&sv, w, j);
        job_unref(j);
    }
    fprintf(stderr, "v4flash serve: shutting down\n");
    pthread_mutex_lock(&sv.mu);
    sv.closing = true;
    job *q = sv.head;
    sv.head = sv.tail = NULL;
    pthread_mutex_unlock(&sv.mu);
    while (q) {
        job *n = q->next;
        fail_job(q, 503, "the server is shutting down", "server_error");
        job_unref(q);
        q = n;
    }
    /* let the answers to the running and queued requests go out (a few
     * seconds at most) before the connections close */
    pthread_mutex_lock(&sv.mu);
    for (int i = 0; i < 50 && sv.active > 0; i++) cond_wait_ms(&sv.cv, &sv.mu, 100);
    pthread_mutex_unlock(&sv.mu);
    MHD_stop_daemon(d);
    v4f_srv_save_live(w); /* --kv-dir: the conversation survives the restart */
    rc = 0;
sigs:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out:
    v4f_srv_free(w);
    v4f_kvstore_close(kvs);
    v4f_session_free(s);
    v4f_tok_free(tok);
    v4f_cli_model_close(&cm);
    pthread_mutex_destroy(&sv.mu);
    pthread_cond_destroy(&sv.cv);
    return rc;
}

#else /* !V4F_HAVE_MHD */

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "v4flash serve: this binary was built without libmicrohttpd (the HTTP library); install "
                    "libmicrohttpd-dev and rebuild (make)\n");
    return 1;
}

#endif
