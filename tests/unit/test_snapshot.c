/*
 * test_snapshot.c - session snapshots (src/model/snapshot.c) and the disk KV
 * glue (src/engine/kvcache.c): save -> restore into a fresh session gives
 * bitwise-equal next-token logits, an identical re-snapshot and identical
 * greedy continuations (REF and compact KV; inside the first window, after
 * the window wrapped, with ratio-4 and ratio-128 compressed rows and open
 * compressor frontiers; the MTP block); clear errors for a larger context,
 * another storage mode and damaged bytes; the disk store round trip with
 * fallback on a flipped byte / truncation and rejection of another model's
 * checkpoint; model fingerprints (q2 != q4, one family); and `v4flash run
 * --kv-dir` / `chat --session` / `bench` across processes (needs V4F_BIN).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../test.h"
#include "engine/kvcache.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/snapshot.h"
#include "model/synth.h"

typedef struct sfx {
    v4f_model *m;
    v4f_gguf *gold;
    const int32_t *tokens;
    uint32_t n, vocab;
} sfx;

static bool sfx_open(const char *name, bool mtp, sfx *f) {
    char p[512], g[512], mp[512];
    snprintf(p, sizeof p, "%smodel/%s.gguf", test_fixture_path(""), name);
    snprintf(g, sizeof g, "%smodel/%s.golden.gguf", test_fixture_path(""), name);
    snprintf(mp, sizeof mp, "%smodel/%s.mtp.gguf", test_fixture_path(""), name);
    v4f_err err = {0};
    memset(f, 0, sizeof *f);
    if (v4f_model_open(p, mtp ? mp : NULL, &f->m, NULL, &err) || v4f_gguf_open(g, &f->gold, &err)) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        v4f_model_close(f->m);
        return false;
    }
    const v4f_gguf_tensor *t = v4f_gguf_tensor_find(f->gold, "tokens");
    f->tokens = t->data;
    f->n = (uint32_t)t->ne[0];
    f->vocab = f->m->cfg.n_vocab;
    return true;
}

static void sfx_close(sfx *f) {
    v4f_gguf_close(f->gold);
    v4f_model_close(f->m);
}

static v4f_session *new_session(const sfx *f, uint32_t n_ctx, v4f_precision prec, bool mtp) {
    v4f_session_opts o = {.n_ctx = n_ctx, .n_threads = 2, .precision = prec, .enable_mtp = mtp};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(f->m, &o, &s, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return s;
}

static int32_t argmax(const float *x, uint32_t n) {
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

/* tokens[i]: the fixture's ids, then a deterministic pattern */
static int32_t tok_at(const sfx *f, uint32_t i) {
    return i < f->n ? f->tokens[i] : (int32_t)((i * 7919u + 13u) % (f->vocab - 8) + 4);
}

static void fill_tokens(const sfx *f, int32_t *t, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) t[i] = tok_at(f, i);
}

/* prefill P tokens into a, snapshot, restore into a fresh b; logits, the
 * re-snapshot and 10 greedy steps must be bitwise identical */
static void roundtrip_at(const sfx *f, v4f_session *a, v4f_session *b, v4f_precision prec,
                         uint32_t P) {
    v4f_err err = {0};
    v4f_session_reset(a);
    v4f_session_reset(b);
    float *la = malloc((size_t)f->vocab * 4), *lb = malloc((size_t)f->vocab * 4);
    int32_t *toks = malloc(P * sizeof *toks);
    fill_tokens(f, toks, P);
    v4f_snapshot_mem ma = {0}, mb = {0};
    if (!a || !b) goto done;
    CHECK_STATUS(v4f_session_eval(a, toks, P, la, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
    CHECK_STATUS(v4f_snapshot_mem_save(a, la, f->vocab, &ma, &err), V4F_OK);
    CHECK_EQ_INT(ma.len, v4f_snapshot_size(a, f->vocab, 0));
    /* b has unrelated state first: the restore must replace all of it */
    CHECK_STATUS(v4f_session_prefill(b, f->tokens + 1, 37, NULL, &err), V4F_OK);
    memset(lb, 0, (size_t)f->vocab * 4);
    CHECK_STATUS(v4f_snapshot_mem_load(b, &ma, lb, f->vocab, &err), V4F_OK);
    CHECK_EQ_INT(v4f_session_pos(b), P);
    CHECK_MSG(!memcmp(la, lb, (size_t)f->vocab * 4), "P=%u prec=%d: restored logits differ", P, prec);
    CHECK_STATUS(v4f_snapshot_mem_save(b, lb, f->vocab, &mb, &err), V4F_OK);
    CHECK_MSG(mb.len == ma.len && !memcmp(ma.data, mb.data, ma.len),
              "P=%u prec=%d: re-snapshot differs", P, prec);
    for (int step = 0; step < 10; step++) {
        int32_t ta = argmax(la, f->vocab), tb = argmax(lb, f->vocab);
        CHECK_EQ_INT(ta, tb);
        CHECK_STATUS(v4f_session_decode(a, ta, la, &err), V4F_OK);
        CHECK_STATUS(v4f_session_decode(b, tb, lb, &err), V4F_OK);
        if (memcmp(la, lb, (size_t)f->vocab * 4)) {
            test_fail(__FILE__, __LINE__, "P=%u prec=%d: logits differ at step %d", P, prec, step);
            break;
        }
    }
done:
    v4f_snapshot_mem_free(&ma);
    v4f_snapshot_mem_free(&mb);
    free(toks);
    free(la);
    free(lb);
}

TEST(snap_roundtrip_bitwise) {
    sfx f;
    if (!sfx_open("tiny-q2", false, &f)) return;
    /* 1, 5, 100: inside the first window; 128: exactly full; 131: wrapped
     * (131 % 4 = 3 open ratio-4 slots); 258: 2 ratio-128 rows + 64 ratio-4
     * rows, indexer selecting (> top-k 16); 300: all fixture ids */
    const uint32_t P[] = {1, 5, 100, 128, 131, 258, 300};
    for (int prec = 0; prec < 2; prec++) {
        v4f_precision pr = prec ? V4F_PRECISION_REF : V4F_PRECISION_DEFAULT;
        v4f_session *a = new_session(&f, 512, pr, false), *b = new_session(&f, 512, pr, false);
        for (size_t i = 0; a && b && i < sizeof P / sizeof P[0]; i++) roundtrip_at(&f, a, b, pr, P[i]);
        v4f_session_free(a);
        v4f_session_free(b);
    }
    sfx_close(&f);
}

TEST(snap_roundtrip_mtp) {
    sfx f;
    if (!sfx_open("tiny-q2", true, &f)) return;
    const uint32_t P = 200;
    v4f_err err = {0};
    v4f_session *a = new_session(&f, 512, V4F_PRECISION_DEFAULT, true);
    v4f_session *b = new_session(&f, 512, V4F_PRECISION_DEFAULT, true);
    v4f_session *c = new_session(&f, 512, V4F_PRECISION_DEFAULT, false);
    size_t HD = (size_t)f.m->cfg.n_hc * f.m->cfg.n_embd;
    float *hc = malloc((P + 1) * HD * 4), *la = malloc((size_t)f.vocab * 4 * 2);
    float *lb = la + f.vocab;
    int32_t toks[256];
    fill_tokens(&f, toks, P + 2);
    v4f_snapshot_mem ma = {0};
    if (a && b && c) {
        CHECK_STATUS(v4f_session_eval(a, toks, P, la, V4F_EVAL_LOGITS_LAST, hc, &err), V4F_OK);
        CHECK_STATUS(v4f_session_mtp_eval(a, hc, toks + 1, P - 1, NULL, &err), V4F_OK);
        CHECK_EQ_INT(v4f_session_mtp_pos(a), P - 1);
        CHECK_STATUS(v4f_snapshot_mem_save(a, la, f.vocab, &ma, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_load(b, &ma, lb, f.vocab, &err), V4F_OK);
        CHECK_EQ_INT(v4f_session_mtp_pos(b), P - 1);
        /* next MTP step (main position P-1, next token P) in both */
        CHECK_STATUS(v4f_session_mtp_eval(a, hc + (P - 1) * HD, toks + P, 1, la, &err), V4F_OK);
        CHECK_STATUS(v4f_session_mtp_eval(b, hc + (P - 1) * HD, toks + P, 1, lb, &err), V4F_OK);
        CHECK_MSG(!memcmp(la, lb, (size_t)f.vocab * 4), "MTP draft logits differ after restore");
        /* main stream continues identically too */
        CHECK_STATUS(v4f_session_eval(a, toks + P, 1, la, 0, hc + P * HD, &err), V4F_OK);
        CHECK_STATUS(v4f_session_eval(b, toks + P, 1, lb, 0, NULL, &err), V4F_OK);
        CHECK(!memcmp(la, lb, (size_t)f.vocab * 4));
        /* a session without MTP takes the main state and skips the MTP record */
        CHECK_STATUS(v4f_snapshot_mem_load(c, &ma, NULL, 0, &err), V4F_OK);
        CHECK_EQ_INT(v4f_session_pos(c), P);
        CHECK_STATUS(v4f_session_eval(c, toks + P, 1, lb, 0, NULL, &err), V4F_OK);
        CHECK(!memcmp(la, lb, (size_t)f.vocab * 4));
        /* ... but an MTP session cannot take a snapshot without MTP state */
        v4f_snapshot_mem mc = {0};
        CHECK_STATUS(v4f_snapshot_mem_save(c, NULL, 0, &mc, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_load(b, &mc, NULL, 0, &err), V4F_STATUS_LAYOUT);
        CHECK_EQ_INT(v4f_session_pos(b), 0);
        v4f_snapshot_mem_free(&mc);
    }
    v4f_snapshot_mem_free(&ma);
    free(hc);
    free(la);
    v4f_session_free(a);
    v4f_session_free(b);
    v4f_session_free(c);
    sfx_close(&f);
}

TEST(snap_errors) {
    sfx f;
    if (!sfx_open("tiny-q2", false, &f)) return;
    v4f_err err = {0};
    v4f_session *a = new_session(&f, 512, V4F_PRECISION_DEFAULT, false);
    v4f_session *small = new_session(&f, 256, V4F_PRECISION_DEFAULT, false);
    v4f_session *ref = new_session(&f, 512, V4F_PRECISION_REF, false);
    float *l1 = malloc((size_t)f.vocab * 4), *l2 = malloc((size_t)f.vocab * 4);
    int32_t toks[300];
    fill_tokens(&f, toks, 300);
    v4f_snapshot_mem m = {0};
    if (a && small && ref) {
        CHECK_STATUS(v4f_session_eval(a, toks, 300, l1, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_save(a, l1, f.vocab, &m, &err), V4F_OK);
        /* larger context than the session: clear error, session reset */
        CHECK_STATUS(v4f_session_prefill(small, toks, 10, NULL, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_load(small, &m, l2, f.vocab, &err), V4F_STATUS_RANGE);
        CHECK_MSG(strstr(err.msg, "context") != NULL, "message: %s", err.msg);
        CHECK_EQ_INT(v4f_session_pos(small), 0); /* reset on error */
        /* another storage mode */
        CHECK_STATUS(v4f_snapshot_mem_load(ref, &m, l2, f.vocab, &err), V4F_STATUS_LAYOUT);
        CHECK(strstr(err.msg, "precision") != NULL);
        /* wrong logits count */
        CHECK_STATUS(v4f_snapshot_mem_load(a, &m, l2, f.vocab - 1, &err), V4F_STATUS_LAYOUT);
        /* header damage */
        v4f_snapshot_mem bad = {0};
        bad.data = malloc(m.len);
        bad.len = bad.cap = m.len;
        struct {
            size_t off;
            v4f_status want;
        } cases[] = {{0, V4F_STATUS_FORMAT},  /* magic */
                     {8, V4F_STATUS_UNSUPPORTED}, /* layout version */
                     {20, V4F_STATUS_LAYOUT}, /* n_layer */
                     {48, V4F_STATUS_LAYOUT}, /* pos: layer row counts disagree */
                     {64, V4F_STATUS_LAYOUT}, /* app bytes: the layer records shift */
                     {72, V4F_STATUS_LAYOUT}}; /* first layer record: ratio */
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            memcpy(bad.data, m.data, m.len);
            bad.data[cases[i].off] ^= 0x01;
            v4f_status st = v4f_snapshot_mem_load(a, &bad, l2, f.vocab, &err);
            CHECK_MSG(st == cases[i].want, "flip @%zu: status %d (%s), want %d", cases[i].off, st,
                      err.msg, cases[i].want);
            CHECK_EQ_INT(v4f_session_pos(a), 0);
        }
        /* truncation anywhere: an error, never a crash */
        const size_t cuts[] = {0, 10, 71, 72, 1000, m.len / 2, m.len - 9, m.len - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            memcpy(bad.data, m.data, m.len);
            bad.len = cuts[i];
            CHECK(v4f_snapshot_mem_load(a, &bad, l2, f.vocab, &err) != V4F_OK);
            CHECK_EQ_INT(v4f_session_pos(a), 0);
        }
        /* random single-byte damage anywhere: restore either fails cleanly or
         * yields a session that still decodes (row contents are not
         * validated here; the disk store's checksum catches them) */
        uint64_t rng = 0x9E3779B97F4A7C15ull;
        bad.len = m.len;
        for (int it = 0; it < 150; it++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t off = (size_t)(rng >> 33) % m.len;
            memcpy(bad.data, m.data, m.len);
            bad.data[off] ^= (uint8_t)(1u << ((rng >> 20) & 7));
            v4f_status st = v4f_snapshot_mem_load(a, &bad, l2, f.vocab, &err);
            if (st == V4F_OK) {
                CHECK_EQ_INT(v4f_session_pos(a), 300);
                CHECK_STATUS(v4f_session_decode(a, 7, l2, &err), V4F_OK);
            } else {
                CHECK_EQ_INT(v4f_session_pos(a), 0);
            }
        }
        free(bad.data);
        /* a smaller position fits a smaller context and still matches bitwise */
        v4f_snapshot_mem m2 = {0};
        v4f_session_reset(a);
        CHECK_STATUS(v4f_session_eval(a, toks, 200, l1, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_save(a, l1, f.vocab, &m2, &err), V4F_OK);
        CHECK_STATUS(v4f_snapshot_mem_load(small, &m2, l2, f.vocab, &err), V4F_OK);
        CHECK(!memcmp(l1, l2, (size_t)f.vocab * 4));
        CHECK_STATUS(v4f_session_decode(a, 5, l1, &err), V4F_OK);
        CHECK_STATUS(v4f_session_decode(small, 5, l2, &err), V4F_OK);
        CHECK(!memcmp(l1, l2, (size_t)f.vocab * 4));
        v4f_snapshot_mem_free(&m2);
    }
    v4f_snapshot_mem_free(&m);
    free(l1);
    free(l2);
    v4f_session_free(a);
    v4f_session_free(small);
    v4f_session_free(ref);
    sfx_close(&f);
}

/* ---- disk store glue ------------------------------------------------------------ */

static void mkdir_p(const char *d) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", d, d);
    CHECK_EQ_INT(system(cmd), 0);
}

/* path of the single *.v4kv file in dir (not session-*) */
static bool find_ckpt(const char *dir, char *out, size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s/*.v4kv 2>/dev/null | head -1", dir);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    bool ok = fgets(out, (int)n, p) != NULL;
    pclose(p);
    if (ok) out[strcspn(out, "\n")] = 0;
    return ok && out[0];
}

TEST(snap_kvstore_roundtrip_and_damage) {
    sfx f, q4;
    if (!sfx_open("tiny-q2", false, &f)) return;
    if (!sfx_open("tiny-q4", false, &q4)) {
        sfx_close(&f);
        return;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/snapstore", test_tmp_dir());
    mkdir_p(dir);
    v4f_err err = {0};
    v4f_kvstore *st = NULL;
    REQUIRE(v4f_kvstore_open(dir, 0, &st, &err) == V4F_OK);
    v4f_kv_ident id, id4;
    v4f_kvcache_ident(f.m, 512, true, false, &id);
    v4f_kvcache_ident(q4.m, 512, true, false, &id4);
    CHECK(!v4f_kv_fp_eq(id.model_fp, id4.model_fp));
    v4f_kv_fp mfp, ffp;
    v4f_kvcache_fingerprints(f.m, &mfp, &ffp);
    CHECK(v4f_kv_fp_eq(mfp, id.model_fp));
    CHECK(!v4f_kv_fp_eq(mfp, ffp));
    v4f_session *a = new_session(&f, 512, V4F_PRECISION_DEFAULT, false);
    v4f_session *b = new_session(&f, 512, V4F_PRECISION_DEFAULT, false);
    float *l1 = malloc((size_t)f.vocab * 4), *l2 = malloc((size_t)f.vocab * 4);
    int32_t toks[300];
    fill_tokens(&f, toks, 300);
    if (a && b) {
        CHECK_STATUS(v4f_session_eval(a, toks, 150, l1, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
        char name[V4F_KVSTORE_NAME_MAX];
        CHECK_STATUS(v4f_kvcache_save(st, &id, a, toks, 150, l1, f.vocab, NULL, 0,
                                      V4F_KV_REASON_COLD, NULL, name, NULL, NULL, &err), V4F_OK);
        /* wrong token count is refused */
        CHECK_STATUS(v4f_kvcache_save(st, &id, a, toks, 149, l1, f.vocab, NULL, 0,
                                      V4F_KV_REASON_COLD, NULL, NULL, NULL, NULL, &err),
                     V4F_STATUS_INVALID_ARG);
        /* longest prefix of a longer query; logits bitwise */
        v4f_kvcache_hit hit;
        CHECK_STATUS(v4f_kvcache_restore_prefix(st, &id, false, 1, b, toks, 300, l2, f.vocab, &hit, &err), V4F_OK);
        CHECK_EQ_INT(hit.n_tokens, 150);
        CHECK(hit.has_logits);
        CHECK(!memcmp(l1, l2, (size_t)f.vocab * 4));
        CHECK_STATUS(v4f_session_decode(a, toks[150], l1, &err), V4F_OK);
        CHECK_STATUS(v4f_session_decode(b, toks[150], l2, &err), V4F_OK);
        CHECK(!memcmp(l1, l2, (size_t)f.vocab * 4));
        /* another model's identity: not found (q4 offered to q2 and back) */
        CHECK_STATUS(v4f_kvcache_restore_prefix(st, &id4, false, 1, b, toks, 300, l2, f.vocab, &hit, &err), V4F_OK);
        CHECK_EQ_INT(hit.n_tokens, 0);
        CHECK_EQ_INT(v4f_session_pos(b), 0);
        /* a named session of the q4 model is rejected for q2 */
        v4f_session *c4 = new_session(&q4, 512, V4F_PRECISION_DEFAULT, false);
        if (c4) {
            CHECK_STATUS(v4f_session_prefill(c4, toks, 40, NULL, &err), V4F_OK);
            CHECK_STATUS(v4f_kvcache_save(st, &id4, c4, toks, 40, NULL, 0, "x", 1,
                                          V4F_KV_REASON_SESSION, "q4sess", NULL, NULL, NULL, &err), V4F_OK);
            int32_t *ids = NULL;
            uint32_t nids = 0;
            CHECK_STATUS(v4f_kvcache_load_session(st, &id, false, "q4sess", b, NULL, 0, NULL, 0, NULL,
                                                  &ids, &nids, &err), V4F_STATUS_LAYOUT);
            CHECK_EQ_INT(v4f_session_pos(b), 0);
            char app[4] = {0};
            v4f_snapshot_info info;
            CHECK_STATUS(v4f_kvcache_load_session(st, &id4, false, "q4sess", c4, NULL, 0, app, sizeof app,
                                                  &info, &ids, &nids, &err), V4F_OK);
            CHECK_EQ_INT(nids, 40);
            CHECK_EQ_INT(info.app_bytes, 1);
            CHECK_EQ_INT(app[0], 'x');
            free(ids);
            CHECK_STATUS(v4f_kvcache_load_session(st, &id4, false, "nosuch", c4, NULL, 0, NULL, 0, NULL,
                                                  &ids, &nids, &err), V4F_STATUS_NOT_FOUND);
            v4f_session_free(c4);
        }
        /* flip one payload byte: detected, fallback to nothing, file quarantined */
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *fp = fopen(path, "r+b");
        REQUIRE(fp);
        fseek(fp, 0, SEEK_END);
        long sz = ftell(fp);
        fseek(fp, sz - 5000, SEEK_SET); /* inside the raw rows / logits */
        int ch = fgetc(fp);
        fseek(fp, sz - 5000, SEEK_SET);
        fputc(ch ^ 0x20, fp);
        fclose(fp);
        CHECK_STATUS(v4f_kvcache_restore_prefix(st, &id, false, 1, b, toks, 300, l2, f.vocab, &hit, &err), V4F_OK);
        CHECK_EQ_INT(hit.n_tokens, 0);
        CHECK_EQ_INT(hit.rejected, 1);
        CHECK_EQ_INT(v4f_session_pos(b), 0);
        /* truncation: save again, cut the file */
        v4f_session_reset(a);
        CHECK_STATUS(v4f_session_eval(a, toks, 150, l1, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
        CHECK_STATUS(v4f_kvcache_save(st, &id, a, toks, 150, l1, f.vocab, NULL, 0,
                                      V4F_KV_REASON_COLD, NULL, name, NULL, NULL, &err), V4F_OK);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        CHECK_EQ_INT(truncate(path, sz - 100), 0);
        CHECK_STATUS(v4f_kvcache_restore_prefix(st, &id, false, 1, b, toks, 300, l2, f.vocab, &hit, &err), V4F_OK);
        CHECK_EQ_INT(hit.n_tokens, 0);
        CHECK_EQ_INT(v4f_session_pos(b), 0);
    }
    free(l1);
    free(l2);
    v4f_session_free(a);
    v4f_session_free(b);
    v4f_kvstore_close(st);
    sfx_close(&q4);
    sfx_close(&f);
}

/* ---- CLI across processes ----------------------------------------------------------- */


static int sh_capture(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0, got;
    while (n + 1 < cap && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) n += got;
    out[n] = 0;
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -2;
}

static double json_num(const char *path, const char *key) {
    static char buf[8192];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(buf, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

TEST(snap_cli_run_kv_dir) {
    if (!test_bin()) {
        printf("    skip: V4F_BIN not set\n");
        return;
    }
    char dir[512], js[512], cmd[8192], base[1536];
    snprintf(dir, sizeof dir, "%s/clikv", test_tmp_dir());
    snprintf(js, sizeof js, "%s/clikv.json", test_tmp_dir());
    mkdir_p(dir);
    snprintf(base, sizeof base,
             "%s run -m %s -p 'Review this code: int main(void) { return 0; } and explain it' "
             "-n 12 --temp 0 -q --threads 2 --ctx 1024 --kv-dir %s --kv-min-tokens 8 --stats-json %s",
             test_bin(), test_fixture_path("model/tiny-q2.gguf"), dir, js);
    static char o1[65536], o2[65536], o3[65536];
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", base);
    CHECK_EQ_INT(sh_capture(cmd, o1, sizeof o1), 0);
    double prompt = json_num(js, "prompt_tokens");
    CHECK(prompt > 8);
    CHECK_EQ_INT(json_num(js, "prefill_tokens_reused"), 0);
    CHECK_EQ_INT(sh_capture(cmd, o2, sizeof o2), 0);
    CHECK_STR(o1, o2);
    CHECK_NEAR(json_num(js, "prefill_tokens_reused"), prompt, 0);
    CHECK_EQ_INT(json_num(js, "prefill_tokens_computed"), 0);
    /* a zero-length and a foreign file in the directory are skipped */
    snprintf(cmd, sizeof cmd, ": > %s/0000000000000000-00000000.v4kv && echo junk > %s/1111111111111111-00000000.v4kv",
             dir, dir);
    CHECK_EQ_INT(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", base);
    CHECK_EQ_INT(sh_capture(cmd, o2, sizeof o2), 0);
    CHECK_STR(o1, o2);
    CHECK_NEAR(json_num(js, "prefill_tokens_reused"), prompt, 0);
    /* damage every checkpoint's last payload byte: warning, re-prefill, same output */
    char ck[1024];
    if (find_ckpt(dir, ck, sizeof ck)) {
        snprintf(cmd, sizeof cmd,
                 "for f in %s/*.v4kv; do printf '\\x5a' | dd of=$f bs=1 seek=$(($(stat -c %%s $f) - 20)) "
                 "conv=notrunc 2>/dev/null; done", dir);
        CHECK_EQ_INT(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "%s 2>%s/err.txt", base, test_tmp_dir());
        CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
        CHECK_STR(o1, o3);
        CHECK_EQ_INT(json_num(js, "prefill_tokens_reused"), 0);
        char errp[600], eb[4096] = {0};
        snprintf(errp, sizeof errp, "%s/err.txt", test_tmp_dir());
        FILE *e = fopen(errp, "r");
        if (e) {
            size_t n = fread(eb, 1, sizeof eb - 1, e);
            eb[n] = 0;
            fclose(e);
        }
        CHECK_MSG(strstr(eb, "warning") != NULL || strstr(eb, "WARN") != NULL ||
                      strstr(eb, "cannot restore") != NULL || strstr(eb, "damaged") != NULL,
                  "no warning on stderr: %s", eb);
    } else {
        test_fail(__FILE__, __LINE__, "no checkpoint written in %s", dir);
    }
    /* two processes on one directory at once: both finish with the same text */
    {
        char oa[600], ob[600];
        snprintf(oa, sizeof oa, "%s/conc-a.txt", test_tmp_dir());
        snprintf(ob, sizeof ob, "%s/conc-b.txt", test_tmp_dir());
        snprintf(cmd, sizeof cmd, "rm -rf %s/*; (%s >%s 2>/dev/null & %s >%s 2>/dev/null & wait) && "
                 "cmp -s %s %s && cat %s", dir, base, oa,
                 base, ob, oa, ob, oa);
        CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
        CHECK_STR(o1, o3);
        snprintf(cmd, sizeof cmd, "%s kv verify --kv-dir %s >/dev/null 2>&1", test_bin(), dir);
        CHECK_EQ_INT(system(cmd), 0);
    }
    /* an unusable --kv-dir: warning, plain run, same text */
    snprintf(cmd, sizeof cmd,
             "%s run -m %s -p 'Review this code: int main(void) { return 0; } and explain it' "
             "-n 12 --temp 0 -q --threads 2 --ctx 1024 --kv-dir /dev/null/kv --kv-min-tokens 8 2>/dev/null",
             test_bin(), test_fixture_path("model/tiny-q2.gguf"));
    CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
    CHECK_STR(o1, o3);
    /* checkpoints inside the prompt and during generation (cold at 16, continued
     * every 16): the second run restores a partial prefix, prefills the rest
     * and still prints the same text */
    {
        char d2[600], cmd2[8192];
        snprintf(d2, sizeof d2, "%s/clikv2", test_tmp_dir());
        mkdir_p(d2);
        snprintf(cmd2, sizeof cmd2,
                 "%s run -m %s -p 'Review this code: int main(void) { return 0; } and explain it' "
                 "-n 12 --temp 0 -q --threads 2 --ctx 1024 --kv-dir %s --kv-min-tokens 8 --kv-interval 16 "
                 "--kv-align 16 --stats-json %s 2>/dev/null",
                 test_bin(), test_fixture_path("model/tiny-q2.gguf"), d2, js);
        CHECK_EQ_INT(sh_capture(cmd2, o3, sizeof o3), 0);
        CHECK_STR(o1, o3);
        CHECK_EQ_INT(sh_capture(cmd2, o3, sizeof o3), 0);
        CHECK_STR(o1, o3);
        double re = json_num(js, "prefill_tokens_reused");
        CHECK_MSG(re > 0 && re < prompt && (int)re % 16 == 0, "partial reuse %g of %g", re, prompt);
        CHECK_NEAR(json_num(js, "prefill_tokens_computed") + re, prompt, 0);
    }
    /* the q4 model does not pick up q2 checkpoints */
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", base); /* rewrites a good q2 checkpoint */
    CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
    snprintf(cmd, sizeof cmd,
             "%s run -m %s -p 'Review this code: int main(void) { return 0; } and explain it' "
             "-n 4 --temp 0 -q --threads 2 --ctx 1024 --kv-dir %s --kv-min-tokens 8 --stats-json %s 2>/dev/null",
             test_bin(), test_fixture_path("model/tiny-q4.gguf"), dir, js);
    CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
    CHECK_EQ_INT(json_num(js, "prefill_tokens_reused"), 0);
}

TEST(snap_cli_chat_session) {
    if (!test_bin()) {
        printf("    skip: V4F_BIN not set\n");
        return;
    }
    char dir[512], cmd[2048];
    snprintf(dir, sizeof dir, "%s/chatkv", test_tmp_dir());
    mkdir_p(dir);
    static char o1[65536], o2[65536], o3[65536];
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    /* one process: two turns; another: first turn, exit (saves), then a
     * new process resumes the session and runs the second turn */
    snprintf(cmd, sizeof cmd,
             "printf 'Hello there\\nAnd now?\\n' | %s chat -m %s -n 6 --temp 0 --threads 2 --ctx 1024 "
             "--no-think 2>/dev/null", test_bin(), m);
    CHECK_EQ_INT(sh_capture(cmd, o1, sizeof o1), 0);
    snprintf(cmd, sizeof cmd,
             "printf 'Hello there\\n' | %s chat -m %s -n 6 --temp 0 --threads 2 --ctx 1024 --no-think "
             "--session t1 --kv-dir %s 2>/dev/null", test_bin(), m, dir);
    CHECK_EQ_INT(sh_capture(cmd, o2, sizeof o2), 0);
    snprintf(cmd, sizeof cmd,
             "printf 'And now?\\n/stats\\n' | %s chat -m %s -n 6 --temp 0 --threads 2 --ctx 1024 --no-think "
             "--session t1 --kv-dir %s 2>&1 >>/dev/null | grep -E 'restored|recomputed'", test_bin(), m, dir);
    CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
    CHECK_MSG(strstr(o3, "0 recomputed") != NULL, "resume message: %s", o3);
    /* the session now holds two turns: start over for an exact comparison */
    mkdir_p(dir);
    snprintf(cmd, sizeof cmd,
             "printf 'Hello there\\n' | %s chat -m %s -n 6 --temp 0 --threads 2 --ctx 1024 --no-think "
             "--session t1 --kv-dir %s >/dev/null 2>&1 && printf 'And now?\\n' | %s chat -m %s -n 6 "
             "--temp 0 --threads 2 --ctx 1024 --no-think --session t1 --kv-dir %s 2>/dev/null",
             test_bin(), m, dir, test_bin(), m, dir);
    CHECK_EQ_INT(sh_capture(cmd, o3, sizeof o3), 0);
    /* o1 = reply1 \n reply2 \n ; o2 = reply1 \n ; o3 = reply2 \n */
    size_t l2 = strlen(o2);
    CHECK_MSG(l2 <= strlen(o1) && !strncmp(o1, o2, l2) && !strcmp(o1 + l2, o3),
              "resumed chat differs:\n[%s]\n[%s]\n[%s]", o1, o2, o3);
}

TEST(snap_cli_bench_rolls_back_probes) {
    if (!test_bin()) {
        printf("    skip: V4F_BIN not set\n");
        return;
    }
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd,
             "%s bench --synthetic tiny --ctx-start 32 --ctx-max 96 --step-incr 32 --gen 4 "
             "--no-membw --threads 2 --csv - 2>/dev/null | grep -E '^[0-9]+,' | cut -d, -f1 | tr '\\n' ' '",
             test_bin());
    CHECK_EQ_INT(sh_capture(cmd, out, sizeof out), 0);
    CHECK_STR(out, "32 64 96 "); /* each probe is restored away: frontiers exact */
}

/* q2 and q4 quantizations of the same (published-shape) model: different
 * model fingerprints, one family fingerprint (skeleton images: the tensor
 * directory is real, big tensors are zero pages) */

static v4f_model *skeleton_model(const char *preset, void **buf, size_t *size) {
    v4f_synth_opts o = {.preset = preset, .n_layer = 2, .seed = 1, .n_threads = 2, .skeleton = true};
    v4f_err err = {0};
    v4f_gguf *g = NULL;
    v4f_model *m = NULL;
    if (v4f_synth_build_memory_ex(&o, buf, size, &err) ||
        v4f_gguf_open_memory(*buf, *size, preset, &g, &err) ||
        v4f_model_open_gguf(g, NULL, &m, NULL, &err)) {
        test_fail(__FILE__, __LINE__, "%s: %s", preset, err.msg);
        return NULL;
    }
    return m;
}

TEST(snap_fingerprint_family) {
    void *b2 = NULL, *b4 = NULL;
    size_t s2 = 0, s4 = 0;
    v4f_model *m2 = skeleton_model("full-q2", &b2, &s2);
    v4f_model *m4 = m2 ? skeleton_model("full-q4", &b4, &s4) : NULL;
    if (m2 && m4) {
        v4f_kv_fp a, fa, b, fb;
        v4f_kvcache_fingerprints(m2, &a, &fa);
        v4f_kvcache_fingerprints(m4, &b, &fb);
        CHECK(!v4f_kv_fp_eq(a, b));
        CHECK(v4f_kv_fp_eq(fa, fb));
        v4f_kv_fp a2;
        v4f_kvcache_fingerprints(m2, &a2, NULL);
        CHECK(v4f_kv_fp_eq(a, a2)); /* deterministic */
    }
    v4f_model_close(m2);
    v4f_model_close(m4);
    if (b2) v4f_synth_memory_free(b2, s2);
    if (b4) v4f_synth_memory_free(b4, s4);
}
