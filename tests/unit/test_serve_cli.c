/*
 * test_serve_cli.c - `v4flash serve` end to end on the tiny-q2 fixture (needs
 * V4F_BIN): the server runs as a child on a free port; requests go over a
 * plain socket (HTTP/1.1, Connection: close; chunked bodies decoded here).
 * Checked: endpoints and error statuses, the API key, response and stream
 * shapes, that a reused KV prefix (live text, token prefix, prompt
 * snapshot) gives the same greedy reply as a fresh server, a client that
 * disconnects mid-stream, and SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json/json.h"
#include "../test.h"



#ifdef V4F_HAVE_MHD

#define IO_TIMEOUT_MS 120000 /* a request on the tiny model takes milliseconds; generous for sanitizer builds */

typedef struct srv_proc {
    pid_t pid;
    int port;
    int err_fd;
    char log[16384];
    size_t log_len;
} srv_proc;

/* Read the child's stderr until `needle` shows up (or EOF / timeout). */
static bool read_log_until(srv_proc *p, const char *needle, int timeout_ms) {
    while (!strstr(p->log, needle)) {
        struct pollfd pf = {.fd = p->err_fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) <= 0) return false;
        if (p->log_len + 1 >= sizeof p->log) return false;
        ssize_t got = read(p->err_fd, p->log + p->log_len, sizeof p->log - 1 - p->log_len);
        if (got <= 0) return false;
        p->log_len += (size_t)got;
        p->log[p->log_len] = 0;
    }
    return true;
}

/* Start `v4flash serve -m tiny-q2 --port 0 EXTRA...` (extra: space-separated). */
static bool srv_start(srv_proc *p, const char *extra) {
    memset(p, 0, sizeof *p);
    int er[2];
    if (pipe(er)) return false;
    char args[1024];
    snprintf(args, sizeof args, "%s", extra ? extra : "");
    char *argv[48];
    int n = 0;
    argv[n++] = (char *)test_bin();
    argv[n++] = "serve";
    argv[n++] = "-m";
    argv[n++] = (char *)test_fixture_path("model/tiny-q2.gguf");
    argv[n++] = "--port";
    argv[n++] = "0";
    if (!strstr(args, "--ctx")) {
        argv[n++] = "--ctx";
        argv[n++] = "1024";
    }
    for (char *t = strtok(args, " "); t && n < 46; t = strtok(NULL, " ")) argv[n++] = t;
    argv[n] = NULL;
    p->pid = fork();
    if (p->pid < 0) return false;
    if (p->pid == 0) {
        dup2(er[1], 2);
        if (!freopen("/dev/null", "w", stdout)) _exit(126);
        close(er[0]);
        execv(test_bin(), argv);
        _exit(127);
    }
    close(er[1]);
    p->err_fd = er[0];
    if (!read_log_until(p, "listening on http://127.0.0.1:", IO_TIMEOUT_MS) || !read_log_until(p, ")\n", 5000))
        return false;
    p->port = atoi(strstr(p->log, "127.0.0.1:") + 10);
    return p->port > 0;
}

/* SIGTERM and wait; the exit status (-1 if it had to be killed). */
static int srv_stop(srv_proc *p) {
    if (p->pid <= 0) return -1;
    kill(p->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 600; i++) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            read_log_until(p, "\x01", 10); /* drain */
            close(p->err_fd);
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &st, 0);
    close(p->err_fd);
    return -1;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct http_resp {
    int status;
    char *body; /* decoded (chunked bodies joined), NUL-terminated */
    size_t len;
    char head[2048];
} http_resp;

static void resp_free(http_resp *r) {
    free(r->body);
    r->body = NULL;
}

/* Decode a chunked body in place; false if malformed. */
static bool unchunk(char *b, size_t *len) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end = NULL;
        unsigned long n = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || end == b + in) return false;
        in = (size_t)(crlf - b) + 2;
        if (n == 0) break;
        if (in + n + 2 > *len) return false;
        memmove(b + out, b + in, n);
        out += n;
        in += n + 2;
    }
    *len = out;
    b[out] = 0;
    return true;
}

/* One request; false on a transport problem. extra_headers: "K: V\r\n"... */
static bool http(int port, const char *method, const char *path, const char *body, const char *extra_headers,
                 http_resp *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_to(port);
    if (fd < 0) return false;
    size_t bl = body ? strlen(body) : 0;
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%s\r\n",
                      method, path, bl, extra_headers ? extra_headers : "");
    bool ok = write(fd, head, (size_t)hl) == hl && (!bl || write(fd, body, bl) == (ssize_t)bl);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (ok) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, IO_TIMEOUT_MS) <= 0) {
            ok = false;
            break;
        }
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t got = read(fd, buf + n, cap - n - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!ok || !sep || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) {
        free(buf);
        return false;
    }
    size_t hlen = (size_t)(sep - buf);
    snprintf(r->head, sizeof r->head, "%.*s", (int)(hlen < sizeof r->head - 1 ? hlen : sizeof r->head - 1), buf);
    r->len = n - hlen - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = 0;
    free(buf);
    if (strstr(r->head, "chunked") && !unchunk(r->body, &r->len)) return false;
    return true;
}

/* A string member at a path of keys / indexes ("choices.0.message.content"). */
static bool json_path_str(const char *js, const char *path, char *out, size_t cap) {
    v4f_json_doc *doc = NULL;
    v4f_err err = {0};
    if (v4f_json_parse(js, strlen(js), NULL, &doc, &err)) return false;
    const v4f_json *v = v4f_json_doc_root(doc);
    char p[256];
    snprintf(p, sizeof p, "%s", path);
    for (char *k = strtok(p, "."); k && v; k = strtok(NULL, "."))
        v = (*k >= '0' && *k <= '9') ? v4f_json_at(v, (uint32_t)atoi(k)) : v4f_json_get(v, k);
    bool ok = v && (v->type == V4F_JSON_STRING || v->type == V4F_JSON_NUMBER);
    if (ok) snprintf(out, cap, "%.*s", (int)v->len, v->str);
    v4f_json_doc_free(doc);
    return ok;
}

static long json_path_long(const char *js, const char *path) {
    char s[64];
    return json_path_str(js, path, s, sizeof s) ? strtol(s, NULL, 10) : -1;
}

TEST(serve_endpoints_and_errors) {
    SKIP_NO_BIN();
    srv_proc p;
    REQUIRE(srv_start(&p, "--api-key sekret"));
    http_resp r;
    REQUIRE(http(p.port, "GET", "/health", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(r.body, "{\"status\":\"ok\"}");
    resp_free(&r);
    /* the key: missing, wrong, Bearer, x-api-key */
    REQUIRE(http(p.port, "GET", "/v1/models", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 401);
    CHECK(strstr(r.body, "invalid_api_key") != NULL);
    resp_free(&r);
    REQUIRE(http(p.port, "GET", "/v1/models", NULL, "Authorization: Bearer nope\r\n", &r));
    CHECK_EQ_INT(r.status, 401);
    resp_free(&r);
    const char *auth = "Authorization: Bearer sekret\r\n";
    REQUIRE(http(p.port, "GET", "/v1/models", NULL, auth, &r));
    CHECK_EQ_INT(r.status, 200);
    char s[256];
    CHECK(json_path_str(r.body, "data.0.id", s, sizeof s) && !strcmp(s, "deepseek-v4-flash"));
    CHECK_EQ_INT(json_path_long(r.body, "data.0.context_length"), 1024);
    resp_free(&r);
    REQUIRE(http(p.port, "GET", "/v1/models/deepseek-v4-flash", NULL, "x-api-key: sekret\r\n", &r));
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(http(p.port, "GET", "/v1/models/gpt-5", NULL, auth, &r));
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(http(p.port, "GET", "/v2/nothing", NULL, auth, &r));
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(http(p.port, "GET", "/v1/chat/completions", NULL, auth, &r));
    CHECK_EQ_INT(r.status, 405);
    resp_free(&r);
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", "{\"messages\": [", auth, &r));
    CHECK_EQ_INT(r.status, 400);
    CHECK(json_path_str(r.body, "error.type", s, sizeof s) && !strcmp(s, "invalid_request_error"));
    resp_free(&r);
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"nobody\",\"content\":\"x\"}]}",
                 auth, &r));
    CHECK_EQ_INT(r.status, 400);
    CHECK(strstr(r.body, "nobody") != NULL);
    resp_free(&r);
    /* a prompt longer than the context (1024) */
    static char big[20000];
    int n = snprintf(big, sizeof big, "{\"prompt\":\"");
    for (int i = 0; i < 1500; i++) n += snprintf(big + n, sizeof big - (size_t)n, "ab ");
    snprintf(big + n, sizeof big - (size_t)n, "\"}");
    REQUIRE(http(p.port, "POST", "/v1/completions", big, auth, &r));
    CHECK_EQ_INT(r.status, 400);
    CHECK(json_path_str(r.body, "error.code", s, sizeof s) && !strcmp(s, "context_length_exceeded"));
    resp_free(&r);
    /* Anthropic: errors in its shape, count_tokens, a message */
    REQUIRE(http(p.port, "POST", "/v1/messages", "{\"messages\":[]}", "x-api-key: sekret\r\n", &r));
    CHECK_EQ_INT(r.status, 400);
    CHECK(json_path_str(r.body, "type", s, sizeof s) && !strcmp(s, "error"));
    CHECK(json_path_str(r.body, "error.type", s, sizeof s) && !strcmp(s, "invalid_request_error"));
    resp_free(&r);
    REQUIRE(http(p.port, "POST", "/v1/messages/count_tokens",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}", "x-api-key: sekret\r\n", &r));
    CHECK_EQ_INT(r.status, 200);
    const long counted = json_path_long(r.body, "input_tokens");
    CHECK(counted > 3);
    resp_free(&r);
    REQUIRE(http(p.port, "POST", "/v1/messages?beta=true", /* Claude Code's URL */
                 "{\"model\":\"claude-x\",\"max_tokens\":3,\"temperature\":0,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"Hello\"}]}",
                 "x-api-key: sekret\r\n", &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_path_str(r.body, "type", s, sizeof s) && !strcmp(s, "message"));
    CHECK(json_path_str(r.body, "model", s, sizeof s) && !strcmp(s, "claude-x"));
    CHECK(json_path_str(r.body, "stop_reason", s, sizeof s) && !strcmp(s, "max_tokens"));
    CHECK_EQ_INT(json_path_long(r.body, "usage.output_tokens"), 3);
    CHECK_EQ_INT(json_path_long(r.body, "usage.input_tokens") + json_path_long(r.body, "usage.cache_read_input_tokens"),
                 counted);
    resp_free(&r);
    /* still serving after all that */
    REQUIRE(http(p.port, "POST", "/v1/chat/completions",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":4,\"temperature\":0}", auth,
                 &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_path_str(r.body, "object", s, sizeof s) && !strcmp(s, "chat.completion"));
    CHECK(json_path_str(r.body, "choices.0.finish_reason", s, sizeof s) && !strcmp(s, "length"));
    CHECK_EQ_INT(json_path_long(r.body, "usage.completion_tokens"), 4);
    CHECK(json_path_long(r.body, "usage.prompt_tokens") > 3);
    resp_free(&r);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

/* The greedy reply to `body` from a fresh server. */
static bool fresh_reply(const char *path, const char *body, const char *extra, http_resp *r) {
    srv_proc p;
    if (!srv_start(&p, extra)) return false;
    bool ok = http(p.port, "POST", path, body, NULL, r) && r->status == 200;
    return srv_stop(&p) == 0 && ok;
}

/* Reusing the KV gives what a fresh server computes (the CPU session is
 * chunking-independent, so the greedy replies are identical). */
TEST(serve_prefix_reuse_matches_fresh) {
    SKIP_NO_BIN();
    srv_proc p;
    REQUIRE(srv_start(&p, "--snapshot-min 4"));
    http_resp r1, r2, f;
    char a[4096], b[4096];
    /* live text: the second prompt extends what the KV holds after the
     * first (one reply token sampled, none evaluated) */
    const char *c1 = "{\"prompt\":\"The quick brown fox\",\"max_tokens\":1,\"temperature\":0}";
    const char *c2 = "{\"prompt\":\"The quick brown fox jumps over\",\"max_tokens\":6,\"temperature\":0}";
    REQUIRE(http(p.port, "POST", "/v1/completions", c1, NULL, &r1) && r1.status == 200);
    const long n1 = json_path_long(r1.body, "usage.prompt_tokens");
    REQUIRE(http(p.port, "POST", "/v1/completions", c2, NULL, &r2) && r2.status == 200);
    CHECK_MSG(json_path_long(r2.body, "usage.prompt_tokens_details.cached_tokens") == n1, "%s", r2.body);
    CHECK_MSG(read_log_until(&p, "cached, live)", IO_TIMEOUT_MS), "%s", p.log);
    REQUIRE(fresh_reply("/v1/completions", c2, NULL, &f));
    CHECK(json_path_str(r2.body, "choices.0.text", a, sizeof a) && json_path_str(f.body, "choices.0.text", b, sizeof b));
    CHECK_MSG(!strcmp(a, b), "reused '%s' vs fresh '%s'", a, b);
    CHECK_EQ_INT(json_path_long(f.body, "usage.prompt_tokens_details.cached_tokens"), 0);
    resp_free(&r1);
    resp_free(&r2);
    resp_free(&f);

    /* chat turn 2 after a thinking reply whose reasoning the template drops:
     * the KV goes back to the snapshot of turn 1's prompt */
    const char *t1 = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}],\"max_tokens\":5,\"temperature\":0}";
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", t1, NULL, &r1) && r1.status == 200);
    const long p1 = json_path_long(r1.body, "usage.prompt_tokens");
    const char *t2 = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"},{\"role\":\"assistant\",\"content\":"
                     "\"Hello.\"},{\"role\":\"user\",\"content\":\"And now?\"}],\"max_tokens\":5,\"temperature\":0}";
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", t2, NULL, &r2) && r2.status == 200);
    const long cached = json_path_long(r2.body, "usage.prompt_tokens_details.cached_tokens");
    CHECK_MSG(cached >= p1 - 1 && cached < json_path_long(r2.body, "usage.prompt_tokens"), "turn 1 %ld, %s", p1,
              r2.body);
    REQUIRE(fresh_reply("/v1/chat/completions", t2, NULL, &f));
    CHECK(json_path_str(r2.body, "choices.0.message.reasoning_content", a, sizeof a));
    CHECK(json_path_str(f.body, "choices.0.message.reasoning_content", b, sizeof b));
    CHECK_MSG(!strcmp(a, b), "reused '%s' vs fresh '%s'", a, b);
    resp_free(&f);
    resp_free(&r1);
    /* the same request again (a retry): all but its last token from the
     * snapshot of its prompt, and the same reply */
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", t2, NULL, &r1) && r1.status == 200);
    CHECK_EQ_INT(json_path_long(r1.body, "usage.prompt_tokens_details.cached_tokens"),
                 json_path_long(r1.body, "usage.prompt_tokens") - 1);
    CHECK(json_path_str(r1.body, "choices.0.message.reasoning_content", b, sizeof b));
    CHECK_MSG(!strcmp(a, b), "first '%s' vs again '%s'", a, b);
    resp_free(&r1);
    resp_free(&r2);
    CHECK_MSG(read_log_until(&p, "snapshot)", IO_TIMEOUT_MS), "%s", p.log);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

/* --quiet: the listening line and warnings only (no request or cache lines). */
TEST(serve_quiet) {
    SKIP_NO_BIN();
    char args[600];
    snprintf(args, sizeof args, "-q --kv-dir %s/serve-kv-quiet --kv-min-tokens 4", test_tmp_dir());
    srv_proc p;
    REQUIRE(srv_start(&p, args));
    http_resp r;
    REQUIRE(http(p.port, "POST", "/v1/completions", "{\"prompt\":\"one two three four five six\",\"max_tokens\":2}",
                 NULL, &r) &&
            r.status == 200);
    resp_free(&r);
    CHECK_EQ_INT(srv_stop(&p), 0);
    CHECK_MSG(!strstr(p.log, "serve: completion") && !strstr(p.log, "kv cache: saved"), "%s", p.log);
    /* the same without -q says both */
    snprintf(args, sizeof args, "--kv-dir %s/serve-kv-loud --kv-min-tokens 4", test_tmp_dir());
    REQUIRE(srv_start(&p, args));
    REQUIRE(http(p.port, "POST", "/v1/completions", "{\"prompt\":\"one two three four five six\",\"max_tokens\":2}",
                 NULL, &r) &&
            r.status == 200);
    resp_free(&r);
    CHECK_EQ_INT(srv_stop(&p), 0);
    CHECK_MSG(strstr(p.log, "serve: completion") && strstr(p.log, "kv cache: saved"), "%s", p.log);
}

/* --kv-dir: a restarted server resumes a prompt from its disk checkpoint
 * and gives the reply the first server gave; the shutdown save keeps the
 * conversation (prompt + reply) for its next turn. */
TEST(serve_disk_cache_across_restart) {
    SKIP_NO_BIN();
    char args[600];
    snprintf(args, sizeof args, "--kv-dir %s/serve-kv --kv-min-tokens 16", test_tmp_dir());
    static char prompt[4096], body[8192], turn2[8192];
    int n = 0;
    for (int i = 0; i < 40; i++) n += snprintf(prompt + n, sizeof prompt - (size_t)n, "word%d ", i);
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":5,\"temperature\":0}", prompt);
    srv_proc p;
    http_resp a, b, c;
    REQUIRE(srv_start(&p, args));
    REQUIRE(http(p.port, "POST", "/v1/completions", body, NULL, &a) && a.status == 200);
    const long n_prompt = json_path_long(a.body, "usage.prompt_tokens");
    CHECK(n_prompt > 40);
    CHECK_EQ_INT(srv_stop(&p), 0);
    CHECK_MSG(strstr(p.log, "(cold)") && strstr(p.log, "(shutdown)"), "%s", p.log);

    REQUIRE(srv_start(&p, args));
    REQUIRE(http(p.port, "POST", "/v1/completions", body, NULL, &b) && b.status == 200);
    CHECK_EQ_INT(json_path_long(b.body, "usage.prompt_tokens_details.cached_tokens"), n_prompt - 1);
    char ta[1024], tb[1024];
    CHECK(json_path_str(a.body, "choices.0.text", ta, sizeof ta) && json_path_str(b.body, "choices.0.text", tb, sizeof tb));
    CHECK_MSG(!strcmp(ta, tb), "first server '%s', restarted '%s'", ta, tb);
    CHECK_EQ_INT(srv_stop(&p), 0);
    CHECK_MSG(strstr(p.log, "cached, disk)"), "%s", p.log);
    resp_free(&b);

    /* the next turn extends the prompt and the reply: served from disk (the
     * shutdown checkpoint, prompt + 4 evaluated reply tokens, when the
     * reply's text tokenizes back the same way; else the cold one) */
    REQUIRE(srv_start(&p, args));
    v4f_json_buf t2;
    v4f_json_buf_init(&t2);
    v4f_json_buf_puts(&t2, prompt);
    v4f_json_buf_puts(&t2, ta);
    v4f_json_buf_puts(&t2, " and more");
    v4f_json_buf js;
    v4f_json_buf_init(&js);
    v4f_json_write_string(&js, t2.data, t2.len, 0);
    snprintf(turn2, sizeof turn2, "{\"prompt\":%s,\"max_tokens\":3,\"temperature\":0}", js.data);
    v4f_json_buf_free(&t2);
    v4f_json_buf_free(&js);
    REQUIRE(http(p.port, "POST", "/v1/completions", turn2, NULL, &c) && c.status == 200);
    CHECK_MSG(json_path_long(c.body, "usage.prompt_tokens_details.cached_tokens") >= n_prompt - 1, "%s", c.body);
    resp_free(&c);
    CHECK_EQ_INT(srv_stop(&p), 0);
    CHECK_MSG(strstr(p.log, "cached, disk)"), "%s", p.log);
    resp_free(&a);
}

/* SSE: role first, deltas, finish_reason, usage, [DONE]; the same text as
 * the non-streaming reply. */
TEST(serve_stream_matches_non_stream) {
    SKIP_NO_BIN();
    srv_proc p;
    REQUIRE(srv_start(&p, "--no-think"));
    const char *q = "{\"messages\":[{\"role\":\"user\",\"content\":\"Count\"}],\"max_tokens\":7,\"temperature\":0%s}";
    char body[512];
    http_resp r, s;
    snprintf(body, sizeof body, q, "");
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", body, NULL, &r) && r.status == 200);
    snprintf(body, sizeof body, q, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    REQUIRE(http(p.port, "POST", "/v1/chat/completions", body, NULL, &s) && s.status == 200);
    CHECK(strstr(s.head, "text/event-stream") != NULL);
    /* join the content deltas */
    v4f_json_buf joined;
    v4f_json_buf_init(&joined);
    int n_events = 0;
    bool done = false, role_first = false, usage = false;
    char fin[32] = "";
    for (char *e = s.body; e && *e;) {
        char *end = strstr(e, "\n\n");
        REQUIRE(end && !strncmp(e, "data: ", 6));
        *end = 0;
        const char *d = e + 6;
        if (!strcmp(d, "[DONE]")) {
            done = true;
        } else {
            char t[1024];
            if (n_events == 0) role_first = json_path_str(d, "choices.0.delta.role", t, sizeof t);
            if (json_path_str(d, "choices.0.delta.content", t, sizeof t)) v4f_json_buf_puts(&joined, t);
            json_path_str(d, "choices.0.finish_reason", fin, sizeof fin);
            if (json_path_long(d, "usage.completion_tokens") == 7) usage = true;
        }
        n_events++;
        e = end + 2;
    }
    char c[4096];
    CHECK(json_path_str(r.body, "choices.0.message.content", c, sizeof c));
    CHECK_MSG(!strcmp(c, joined.len ? joined.data : ""), "non-stream '%s' vs stream '%s'", c, joined.data);
    CHECK(done && role_first && usage);
    CHECK_STR(fin, "length");
    v4f_json_buf_free(&joined);
    resp_free(&r);
    resp_free(&s);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

/* A client that goes away cancels its job (streaming: at the next write;
 * otherwise the server polls the socket); the server goes on. Greedy from
 * this prompt runs 4,000 tokens without EOS on tiny-q2 (seconds), so the
 * disconnect always comes first. */
static void disconnect_case(bool stream) {
    srv_proc p;
    REQUIRE(srv_start(&p, "--no-think --ctx 4096"));
    int fd = connect_to(p.port);
    REQUIRE(fd >= 0);
    char body[256], req[512];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Go\"}],\"max_tokens\":4000,\"temperature\":0,"
             "\"stream\":%s}",
             stream ? "true" : "false");
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", strlen(body),
                     body);
    REQUIRE(write(fd, req, (size_t)n) == n);
    if (stream) { /* the first events arrived */
        char buf[512];
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        REQUIRE(poll(&pf, 1, IO_TIMEOUT_MS) > 0 && read(fd, buf, sizeof buf) > 0);
    } else { /* the request is running */
        REQUIRE(read_log_until(&p, "listening", IO_TIMEOUT_MS));
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    CHECK_MSG(read_log_until(&p, "request cancelled after", IO_TIMEOUT_MS), "%s", p.log);
    CHECK_MSG(!strstr(p.log, "4000 generated"), "%s", p.log);
    http_resp r;
    REQUIRE(http(p.port, "GET", "/health", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

TEST(serve_client_disconnect_cancels) {
    SKIP_NO_BIN();
    disconnect_case(true);
    disconnect_case(false);
}

/* A queued request whose client left is dropped before it starts (the KV
 * is not touched for it). */
TEST(serve_queued_request_cancelled) {
    SKIP_NO_BIN();
    srv_proc p;
    REQUIRE(srv_start(&p, "--no-think --ctx 4096"));
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Go\"}],\"max_tokens\":4000,\"temperature\":0%s}";
    char b1[256], b2[256], req[512];
    snprintf(b1, sizeof b1, body, ",\"stream\":true");
    snprintf(b2, sizeof b2, body, "");
    int a = connect_to(p.port), b = connect_to(p.port);
    REQUIRE(a >= 0 && b >= 0);
    int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(b1), b1);
    REQUIRE(write(a, req, (size_t)n) == n);
    char buf[512];
    struct pollfd pf = {.fd = a, .events = POLLIN};
    REQUIRE(poll(&pf, 1, IO_TIMEOUT_MS) > 0 && read(a, buf, sizeof buf) > 0); /* A runs */
    n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(b2), b2);
    REQUIRE(write(b, req, (size_t)n) == n);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    close(b); /* B waits in the queue; its connection notices within a second */
    ts.tv_sec = 1;
    ts.tv_nsec = 500 * 1000 * 1000;
    nanosleep(&ts, NULL);
    close(a);
    CHECK_MSG(read_log_until(&p, "request cancelled before it started", IO_TIMEOUT_MS), "%s", p.log);
    CHECK_MSG(strstr(p.log, "request cancelled after") != NULL, "%s", p.log);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

/* SIGTERM during a long request: the client gets an error, exit 0. */
TEST(serve_sigterm_mid_request) {
    SKIP_NO_BIN();
    srv_proc p;
    REQUIRE(srv_start(&p, "--no-think --ctx 4096"));
    int fd = connect_to(p.port);
    REQUIRE(fd >= 0);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Go\"}],\"max_tokens\":4000,\"temperature\":0,"
                       "\"stream\":true}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     strlen(body), body);
    REQUIRE(write(fd, req, (size_t)n) == n);
    static char buf[1 << 20];
    size_t got = 0;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    REQUIRE(poll(&pf, 1, IO_TIMEOUT_MS) > 0);
    ssize_t k = read(fd, buf, sizeof buf - 1);
    REQUIRE(k > 0);
    got = (size_t)k;
    kill(p.pid, SIGTERM);
    while (got + 1 < sizeof buf && poll(&pf, 1, IO_TIMEOUT_MS) > 0 && (k = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)k;
    buf[got] = 0;
    close(fd);
    read_log_until(&p, "\x01", 2000);
    CHECK_MSG(strstr(buf, "shutting down") != NULL && strstr(buf, "data: [DONE]") != NULL, "%.300s\nLOG %s", buf, p.log);
    CHECK_EQ_INT(srv_stop(&p), 0);
}

#else

TEST(serve_without_mhd_says_so) {
    SKIP_NO_BIN();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s serve -m %s 2>&1", test_bin(), test_fixture_path("model/tiny-q2.gguf"));
    FILE *f = popen(cmd, "r");
    REQUIRE(f);
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    int st = pclose(f);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CHECK_MSG(strstr(out, "libmicrohttpd") != NULL, "%s", out);
}

#endif
