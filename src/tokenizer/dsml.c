/*
 * dsml.c - incremental DSML completion parser (see dsml.h).
 *
 * States: REASONING -> (</think>) -> CONTENT -> ("\n\n<｜DSML｜tool_calls")
 * -> TOOL_CALLS -> (EOS) -> DONE. REASONING and CONTENT scan a small pending
 * buffer for their markers and commit everything that cannot be the start
 * of one. TOOL_CALLS appends to a block buffer and advances a resumable
 * cursor parser over it (linear overall: marker searches resume where the
 * previous one stopped). A grammar error turns the block into plain
 * content (RAW state: everything up to EOS is content).
 *
 * Memory: all buffers are owned by the parser (growable, freed by
 * v4f_dsml_free). Threading: one parser per stream.
 */
#include "tokenizer/dsml.h"

#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "tokenizer/chat.h"

#define M_THINK_END V4F_CHAT_THINK_END
#define M_EOS V4F_CHAT_EOS
#define M_CALLS_START "\n\n<" V4F_CHAT_DSML "tool_calls"
#define M_CALLS_END "</" V4F_CHAT_DSML "tool_calls>"
#define M_INVOKE "<" V4F_CHAT_DSML "invoke"
#define M_INVOKE_END "</" V4F_CHAT_DSML "invoke"
#define M_PARAM "<" V4F_CHAT_DSML "parameter"
#define M_PARAM_END "/" V4F_CHAT_DSML "parameter"

enum { S_REASONING, S_CONTENT, S_TOOLS, S_RAW, S_DONE };

/* tool-block sub-states */
enum {
    T_SEP_THEN_INVOKE_OR_END, /* ">\n" then <invoke or </tool_calls> */
    T_HEADER,                 /* invoke header up to <parameter or </invoke */
    T_PARAM,                  /* parameter body up to /parameter */
    T_SEP_THEN_PARAM_OR_END,  /* ">\n" then <parameter or </invoke */
    T_AFTER_BLOCK             /* only EOS may follow */
};

typedef struct call_buf {
    v4f_json_buf name, args;
    /* parameter names seen in this invoke, for the duplicate check:
     * offsets into names (NUL-separated) */
    v4f_json_buf names;
    size_t n_params;
} call_buf;

struct v4f_dsml {
    int state;
    bool finished;
    unsigned flags;
    bool eos;
    v4f_json_buf reasoning, content;
    v4f_json_buf pend;  /* REASONING/CONTENT/AFTER_BLOCK: held-back bytes */
    v4f_json_buf block; /* TOOLS: raw block text after M_CALLS_START */
    size_t cur;         /* parse position in block */
    size_t scan_from;   /* marker search resume point */
    size_t eos_scan;    /* EOS search resume point in block */
    size_t hidden;      /* block bytes past an EOS, hidden from the parser */
    int tstate;
    call_buf *calls;
    size_t n_calls, cap_calls;
    v4f_dsml_call *views;
};

v4f_dsml *v4f_dsml_new(bool thinking) {
    v4f_dsml *p = v4f_xcalloc(1, sizeof *p);
    p->state = thinking ? S_REASONING : S_CONTENT;
    v4f_json_buf_append(&p->reasoning, "", 0);
    v4f_json_buf_append(&p->content, "", 0);
    return p;
}

static void calls_clear(v4f_dsml *p) {
    for (size_t i = 0; i < p->n_calls; i++) {
        v4f_json_buf_free(&p->calls[i].name);
        v4f_json_buf_free(&p->calls[i].args);
        v4f_json_buf_free(&p->calls[i].names);
    }
    p->n_calls = 0;
}

void v4f_dsml_free(v4f_dsml *p) {
    if (!p) return;
    calls_clear(p);
    free(p->calls);
    free(p->views);
    v4f_json_buf_free(&p->reasoning);
    v4f_json_buf_free(&p->content);
    v4f_json_buf_free(&p->pend);
    v4f_json_buf_free(&p->block);
    free(p);
}

v4f_dsml_state v4f_dsml_get_state(const v4f_dsml *p) {
    switch (p->state) {
    case S_REASONING: return V4F_DSML_IN_REASONING;
    case S_CONTENT:
    case S_RAW: return V4F_DSML_IN_CONTENT;
    case S_TOOLS: return V4F_DSML_IN_TOOL_CALLS;
    default: return V4F_DSML_DONE;
    }
}

/* ---- helpers ------------------------------------------------------------- */

static const char *find(const char *h, size_t hn, const char *needle, size_t nn) {
    if (nn > hn) return NULL;
    return memmem(h, hn, needle, nn);
}

/* Longest suffix of s[0..n) that is a proper prefix of marker m. */
static size_t prefix_tail(const char *s, size_t n, const char *m) {
    size_t ml = strlen(m);
    size_t k = n < ml - 1 ? n : ml - 1;
    for (; k > 0; k--)
        if (memcmp(s + n - k, m, k) == 0) return k;
    return 0;
}

static void set_done(v4f_dsml *p) { p->state = S_DONE; }

/* ---- tool block ------------------------------------------------------------ */

static void to_raw(v4f_dsml *p) {
    /* the whole block becomes plain content: its text goes back through the
     * RAW text state (which still stops at EOS) */
    p->flags |= V4F_DSML_MALFORMED;
    v4f_json_buf_puts(&p->content, M_CALLS_START);
    v4f_json_buf tail = p->pend;
    v4f_json_buf_init(&p->pend);
    v4f_json_buf_append(&p->pend, p->block.data ? p->block.data : "", p->block.len + p->hidden);
    p->hidden = 0;
    if (tail.len) v4f_json_buf_append(&p->pend, tail.data, tail.len);
    v4f_json_buf_free(&tail);
    p->block.len = 0;
    calls_clear(p);
    p->state = S_RAW;
}

/* Match literal lit at block[cur..]: 1 matched, 0 need more, -1 mismatch. */
static int expect_lit(const v4f_dsml *p, size_t at, const char *lit) {
    if (at > p->block.len) return 0;
    size_t l = strlen(lit), have = p->block.len - at;
    size_t k = have < l ? have : l;
    if (memcmp(p->block.data + at, lit, k) != 0) return -1;
    return have >= l ? 1 : 0;
}

/* ">\n" then one of two markers at cur. Returns 1/2 for which, 0 need more,
 * -1 mismatch. */
static int expect_sep_marker(v4f_dsml *p, const char *m1, const char *m2) {
    int r = expect_lit(p, p->cur, ">\n");
    if (r <= 0) return r;
    size_t at = p->cur + 2;
    int a = expect_lit(p, at, m1), b = expect_lit(p, at, m2);
    if (a == 1) { p->cur = at + strlen(m1); return 1; }
    if (b == 1) { p->cur = at + strlen(m2); return 2; }
    if (a == 0 || b == 0) return 0;
    return -1;
}

/* Earliest of the markers at or after cur. Returns the index of the marker
 * found (and *pos), or -1 (need more; scan_from advanced). */
static int find_markers(v4f_dsml *p, const char *const *ms, int nm, size_t *pos) {
    size_t from = p->scan_from > p->cur ? p->scan_from : p->cur;
    if (from > p->block.len) from = p->block.len; /* the visible part may end at an EOS */
    const char *best = NULL;
    int which = -1;
    size_t maxl = 0;
    for (int i = 0; i < nm; i++) {
        size_t l = strlen(ms[i]);
        if (l > maxl) maxl = l;
        const char *f = find(p->block.data + from, p->block.len - from, ms[i], l);
        if (f && (!best || f < best)) { best = f; which = i; }
    }
    if (best) {
        *pos = (size_t)(best - p->block.data);
        p->scan_from = 0;
        return which;
    }
    if (p->block.len >= maxl) {
        size_t s = p->block.len - (maxl - 1);
        if (s > from) p->scan_from = s;
    }
    return -1;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static call_buf *new_call(v4f_dsml *p) {
    if (p->n_calls == p->cap_calls) {
        p->cap_calls = p->cap_calls ? p->cap_calls * 2 : 4;
        p->calls = v4f_xrealloc(p->calls, p->cap_calls * sizeof *p->calls);
    }
    call_buf *c = &p->calls[p->n_calls++];
    memset(c, 0, sizeof *c);
    v4f_json_buf_putc(&c->args, '{');
    return c;
}

/* header text h[0..n): \s*name="NAME">\n  (an extra final \n allowed) */
static bool parse_header(v4f_dsml *p, const char *h, size_t n) {
    size_t i = 0;
    while (i < n && is_ws(h[i])) i++;
    static const char pre[] = "name=\"";
    if (n - i < sizeof pre - 1 || memcmp(h + i, pre, sizeof pre - 1) != 0) return false;
    i += sizeof pre - 1;
    size_t end;
    if (n >= 4 && memcmp(h + n - 4, "\">\n\n", 4) == 0) end = n - 4;
    else if (n >= 3 && memcmp(h + n - 3, "\">\n", 3) == 0) end = n - 3;
    else return false;
    if (end < i) return false;
    call_buf *c = new_call(p);
    v4f_json_buf_append(&c->name, h + i, end - i);
    return true;
}

/* param text t[0..n) (between "<｜DSML｜parameter" and "/｜DSML｜parameter"):
 *  name="K" string="true|false">V<   (a final "\n" after '<' allowed) */
static bool parse_param(v4f_dsml *p, const char *t, size_t n) {
    static const char pre[] = " name=\"";
    if (n < sizeof pre - 1 || memcmp(t, pre, sizeof pre - 1) != 0) return false;
    size_t i = sizeof pre - 1;
    const char *a = find(t + i, n - i, "\" string=\"true\">", 16);
    const char *b = find(t + i, n - i, "\" string=\"false\">", 17);
    const char *m = a && (!b || a < b) ? a : b;
    if (!m) return false;
    bool is_str = m == a;
    size_t name_end = (size_t)(m - t), vstart = name_end + (is_str ? 16 : 17);
    size_t vend;
    if (n >= 2 && t[n - 2] == '<' && t[n - 1] == '\n') vend = n - 2;
    else if (n >= 1 && t[n - 1] == '<') vend = n - 1;
    else return false;
    if (vend < vstart) return false;
    if (!p->n_calls) return false;
    call_buf *c = &p->calls[p->n_calls - 1];
    /* duplicate names are an error */
    const char *key = t + i;
    size_t kl = name_end - i;
    for (size_t off = 0; off < c->names.len;) {
        size_t l = strlen(c->names.data + off);
        if (l == kl && memcmp(c->names.data + off, key, kl) == 0) return false;
        off += l + 1;
    }
    if (memchr(key, '\0', kl)) return false;
    v4f_json_buf_append(&c->names, key, kl);
    v4f_json_buf_putc(&c->names, '\0');
    if (c->n_params++) v4f_json_buf_puts(&c->args, ", ");
    v4f_json_write_string(&c->args, key, kl, 0);
    v4f_json_buf_puts(&c->args, ": ");
    if (is_str) v4f_json_write_string(&c->args, t + vstart, vend - vstart, 0);
    else v4f_json_buf_append(&c->args, t + vstart, vend - vstart);
    return true;
}

static void end_call(v4f_dsml *p) {
    if (p->n_calls) v4f_json_buf_putc(&p->calls[p->n_calls - 1].args, '}');
}

/* Advance the block parser as far as the buffered text allows. */
static void tools_step(v4f_dsml *p) {
    static const char *const inv_or_end[2] = {M_INVOKE, M_CALLS_END};
    static const char *const par_or_inv_end[2] = {M_PARAM, M_INVOKE_END};
    static const char *const par_end[1] = {M_PARAM_END};
    for (;;) {
        if (p->state != S_TOOLS) return;
        int r;
        size_t pos;
        switch (p->tstate) {
        case T_SEP_THEN_INVOKE_OR_END:
            r = expect_sep_marker(p, inv_or_end[0], inv_or_end[1]);
            if (r == 0) return;
            if (r < 0) { to_raw(p); return; }
            p->tstate = r == 1 ? T_HEADER : T_AFTER_BLOCK;
            break;
        case T_HEADER:
            r = find_markers(p, par_or_inv_end, 2, &pos);
            if (r < 0) return;
            if (!parse_header(p, p->block.data + p->cur, pos - p->cur)) { to_raw(p); return; }
            p->cur = pos + strlen(par_or_inv_end[r]);
            if (r == 0) {
                p->tstate = T_PARAM;
            } else {
                end_call(p);
                p->tstate = T_SEP_THEN_INVOKE_OR_END;
            }
            break;
        case T_PARAM:
            r = find_markers(p, par_end, 1, &pos);
            if (r < 0) return;
            if (!parse_param(p, p->block.data + p->cur, pos - p->cur)) { to_raw(p); return; }
            p->cur = pos + strlen(M_PARAM_END);
            p->tstate = T_SEP_THEN_PARAM_OR_END;
            break;
        case T_SEP_THEN_PARAM_OR_END:
            r = expect_sep_marker(p, par_or_inv_end[0], par_or_inv_end[1]);
            if (r == 0) return;
            if (r < 0) { to_raw(p); return; }
            if (r == 1) {
                p->tstate = T_PARAM;
            } else {
                end_call(p);
                p->tstate = T_SEP_THEN_INVOKE_OR_END;
            }
            break;
        case T_AFTER_BLOCK:
            /* only EOS may follow; tools_run handles a complete one */
            if (p->cur == p->block.len) return;
            if (expect_lit(p, p->cur, M_EOS) < 0) to_raw(p);
            return;
        }
    }
}

/* ---- text states ------------------------------------------------------------ */

/* Consume p->pend for REASONING / CONTENT / RAW. Returns when all bytes that
 * can be committed are committed (or the state changed to one that takes
 * the remainder, which is then handed on by the caller loop). */
static void text_step(v4f_dsml *p) {
    while (p->pend.len && (p->state == S_REASONING || p->state == S_CONTENT || p->state == S_RAW)) {
        const char *ms[3];
        int nm = 0;
        if (p->state == S_REASONING) { ms[nm++] = M_THINK_END; ms[nm++] = M_EOS; }
        else if (p->state == S_CONTENT) { ms[nm++] = M_EOS; ms[nm++] = M_CALLS_START; }
        else ms[nm++] = M_EOS;
        v4f_json_buf *dst = p->state == S_REASONING ? &p->reasoning : &p->content;
        const char *best = NULL;
        int which = -1;
        for (int i = 0; i < nm; i++) {
            const char *f = find(p->pend.data, p->pend.len, ms[i], strlen(ms[i]));
            if (f && (!best || f < best)) { best = f; which = i; }
        }
        if (!best) {
            size_t keep = 0;
            for (int i = 0; i < nm; i++) {
                size_t k = prefix_tail(p->pend.data, p->pend.len, ms[i]);
                if (k > keep) keep = k;
            }
            v4f_json_buf_append(dst, p->pend.data, p->pend.len - keep);
            memmove(p->pend.data, p->pend.data + p->pend.len - keep, keep);
            p->pend.len = keep;
            return;
        }
        size_t at = (size_t)(best - p->pend.data), ml = strlen(ms[which]);
        v4f_json_buf_append(dst, p->pend.data, at);
        size_t rest = p->pend.len - at - ml;
        const char *m = ms[which];
        if (!strcmp(m, M_EOS)) {
            if (p->state == S_REASONING) p->flags |= V4F_DSML_NO_THINK_END;
            p->eos = true;
            if (rest) p->flags |= V4F_DSML_TRAILING;
            p->pend.len = 0;
            set_done(p);
            return;
        }
        memmove(p->pend.data, p->pend.data + at + ml, rest);
        p->pend.len = rest;
        if (!strcmp(m, M_THINK_END)) {
            p->state = S_CONTENT;
        } else { /* tool calls start: the rest goes to the block */
            p->state = S_TOOLS;
            p->block.len = 0;
            p->cur = p->scan_from = 0;
            p->eos_scan = 0;
            p->tstate = T_SEP_THEN_INVOKE_OR_END;
            v4f_json_buf_append(&p->block, p->pend.data, p->pend.len);
            p->pend.len = 0;
            return;
        }
    }
}

/* Run the block parser over the text before the first EOS only (EOS ends
 * generation). If an EOS is there and the block is not complete exactly at
 * it, the block is malformed. */
static void tools_run(v4f_dsml *p) {
    size_t ml = strlen(M_EOS), from = p->eos_scan;
    const char *e = find(p->block.data + from, p->block.len - from, M_EOS, ml);
    if (!e) {
        if (p->block.len >= ml) p->eos_scan = p->block.len - (ml - 1);
        tools_step(p);
        return;
    }
    size_t at = (size_t)(e - p->block.data), full = p->block.len;
    p->hidden = full - at;
    p->block.len = at;
    tools_step(p);
    if (p->state != S_TOOLS) return; /* to_raw took the hidden bytes too */
    p->block.len = full;
    p->hidden = 0;
    if (p->tstate == T_AFTER_BLOCK && p->cur == at) {
        p->eos = true;
        if (at + ml < full) p->flags |= V4F_DSML_TRAILING;
        set_done(p);
    } else {
        to_raw(p);
    }
}

/* Run the state machine over everything buffered. */
static void pump(v4f_dsml *p) {
    for (;;) {
        int st = p->state;
        if (st == S_REASONING || st == S_CONTENT || st == S_RAW) {
            if (!p->pend.len) return;
            text_step(p);
            if (p->state == st) return; /* everything committable is committed */
        } else if (st == S_TOOLS) {
            tools_run(p);
            if (p->state == S_TOOLS || p->state == S_DONE) return;
        } else {
            return;
        }
    }
}

void v4f_dsml_feed(v4f_dsml *p, const char *text, size_t len) {
    if (!p || p->finished || !len || !text) return;
    if (p->state == S_DONE) {
        p->flags |= V4F_DSML_TRAILING;
        return;
    }
    if (p->state == S_TOOLS) v4f_json_buf_append(&p->block, text, len);
    else v4f_json_buf_append(&p->pend, text, len);
    pump(p);
}

void v4f_dsml_finish(v4f_dsml *p) {
    if (!p || p->finished) return;
    p->finished = true;
    if (p->state == S_TOOLS) {
        if (!(p->tstate == T_AFTER_BLOCK && p->cur == p->block.len)) {
            /* cut off inside the block (a complete block without EOS is
             * accepted, as officially) */
            p->flags |= V4F_DSML_TRUNCATED;
            to_raw(p);
            pump(p);
        }
    }
    if (p->state == S_REASONING || p->state == S_CONTENT || p->state == S_RAW) {
        v4f_json_buf *dst = p->state == S_REASONING ? &p->reasoning : &p->content;
        if (p->pend.len) v4f_json_buf_append(dst, p->pend.data, p->pend.len);
        p->pend.len = 0;
        p->flags |= V4F_DSML_TRUNCATED;
        if (p->state == S_REASONING) p->flags |= V4F_DSML_NO_THINK_END;
    }
    set_done(p);
}

void v4f_dsml_text(const v4f_dsml *p, const char **reasoning, size_t *reasoning_len, const char **content,
                   size_t *content_len) {
    *reasoning = p->reasoning.data ? p->reasoning.data : "";
    *reasoning_len = p->reasoning.len;
    *content = p->content.data ? p->content.data : "";
    *content_len = p->content.len;
}

void v4f_dsml_result(const v4f_dsml *p, v4f_dsml_msg *out) {
    memset(out, 0, sizeof *out);
    if (!p) return;
    v4f_dsml *q = (v4f_dsml *)p; /* views are a cache */
    out->reasoning = p->reasoning.data ? p->reasoning.data : "";
    out->reasoning_len = p->reasoning.len;
    out->content = p->content.data ? p->content.data : "";
    out->content_len = p->content.len;
    out->eos = p->eos;
    unsigned flags = p->flags;
    static const char *const specials[] = {V4F_CHAT_BOS, V4F_CHAT_EOS, V4F_CHAT_THINK,
                                           V4F_CHAT_THINK_END, V4F_CHAT_DSML};
    if (!(flags & V4F_DSML_MALFORMED))
        for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
            if (find(out->reasoning, out->reasoning_len, specials[i], strlen(specials[i])) ||
                find(out->content, out->content_len, specials[i], strlen(specials[i])))
                flags |= V4F_DSML_SPECIAL_IN_TEXT;
    out->flags = flags;
    if (p->state == S_DONE && p->n_calls && !(p->flags & V4F_DSML_MALFORMED)) {
        free(q->views);
        q->views = v4f_xcalloc(p->n_calls, sizeof *q->views);
        for (size_t i = 0; i < p->n_calls; i++) {
            q->views[i] = (v4f_dsml_call){p->calls[i].name.data ? p->calls[i].name.data : "",
                                          p->calls[i].name.len, p->calls[i].args.data,
                                          p->calls[i].args.len};
        }
        out->calls = q->views;
        out->n_calls = p->n_calls;
    }
}

void v4f_dsml_msg_write_json(v4f_json_buf *b, const v4f_dsml_msg *m, unsigned flags) {
    bool py = flags & V4F_JSON_WRITE_PY;
    const char *sep = py ? ", " : ",", *col = py ? ": " : ":";
    v4f_json_buf_puts(b, "{\"role\"");
    v4f_json_buf_puts(b, col);
    v4f_json_buf_puts(b, "\"assistant\"");
    v4f_json_buf_puts(b, sep);
    v4f_json_buf_puts(b, "\"content\"");
    v4f_json_buf_puts(b, col);
    v4f_json_write_string(b, m->content, m->content_len, flags);
    v4f_json_buf_puts(b, sep);
    v4f_json_buf_puts(b, "\"reasoning_content\"");
    v4f_json_buf_puts(b, col);
    v4f_json_write_string(b, m->reasoning, m->reasoning_len, flags);
    v4f_json_buf_puts(b, sep);
    v4f_json_buf_puts(b, "\"tool_calls\"");
    v4f_json_buf_puts(b, col);
    v4f_json_buf_putc(b, '[');
    for (size_t i = 0; i < m->n_calls; i++) {
        if (i) v4f_json_buf_puts(b, sep);
        v4f_json_buf_puts(b, "{\"type\"");
        v4f_json_buf_puts(b, col);
        v4f_json_buf_puts(b, "\"function\"");
        v4f_json_buf_puts(b, sep);
        v4f_json_buf_puts(b, "\"function\"");
        v4f_json_buf_puts(b, col);
        v4f_json_buf_puts(b, "{\"name\"");
        v4f_json_buf_puts(b, col);
        v4f_json_write_string(b, m->calls[i].name, m->calls[i].name_len, flags);
        v4f_json_buf_puts(b, sep);
        v4f_json_buf_puts(b, "\"arguments\"");
        v4f_json_buf_puts(b, col);
        v4f_json_write_string(b, m->calls[i].arguments, m->calls[i].arguments_len, flags);
        v4f_json_buf_puts(b, "}}");
    }
    v4f_json_buf_puts(b, "]}");
}
