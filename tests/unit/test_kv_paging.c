/*
 * test_kv_paging.c - file-backed KV paging (src/model/kv.c, session option
 * kv_page_dir): logits bitwise equal with and without paging (tiny-q2, REF
 * and compact KV, prefill of > 600 tokens so the ratio-4 indexer selects
 * top-16 of > 150 compressed rows, then decode steps); a snapshot of a paged
 * session restores bitwise into paged and RAM sessions and back; the backing
 * file is never visible in the directory and its mapping is gone after the
 * session ends; clear errors for a missing directory and for space that
 * cannot be reserved (RLIMIT_FSIZE in a child process stands in for a full
 * disk, so nothing is ever filled); the synthetic fill and working-set
 * helpers used by `bench --fake-ctx`.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../test.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "model/snapshot.h"

#define N_PROMPT 660u
#define N_DECODE 6

static v4f_model *open_tiny(void) {
    v4f_err err = {0};
    v4f_model *m = NULL;
    if (v4f_model_open(test_fixture_path("model/tiny-q2.gguf"), NULL, &m, NULL, &err)) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        return NULL;
    }
    return m;
}

static const char *page_dir(void) {
    static char d[600];
    snprintf(d, sizeof d, "%s/kvpage", test_tmp_dir());
    mkdir(d, 0700);
    return d;
}

/* entries of dir other than . and .. */
static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* mappings of a (deleted) KV page file in this process */
static int page_mappings(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "v4flash-kv-")) n++;
    fclose(f);
    return n;
}

static v4f_session *new_session(v4f_model *m, v4f_precision prec, const char *dir) {
    v4f_session_opts o = {.n_ctx = 1024, .n_threads = 2, .precision = prec, .kv_page_dir = dir};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(m, &o, &s, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return s;
}

static void fill_tokens(const v4f_model *m, int32_t *t, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) t[i] = (int32_t)((i * 7919u + 13u) % (m->cfg.n_vocab - 8) + 4);
}

static int32_t argmax(const float *x, uint32_t n) {
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

TEST(kvpage_logits_bitwise) {
    v4f_model *m = open_tiny();
    REQUIRE(m);
    const uint32_t V = m->cfg.n_vocab;
    const char *dir = page_dir();
    int32_t *toks = malloc(N_PROMPT * sizeof *toks);
    fill_tokens(m, toks, N_PROMPT);
    float *la = malloc((size_t)N_PROMPT * V * 4), *lb = malloc((size_t)N_PROMPT * V * 4);
    v4f_err err = {0};
    for (int p = 0; p < 2; p++) {
        v4f_precision prec = p ? V4F_PRECISION_REF : V4F_PRECISION_DEFAULT;
        v4f_session *a = new_session(m, prec, NULL), *b = new_session(m, prec, dir);
        if (!a || !b) {
            v4f_session_free(a);
            v4f_session_free(b);
            break;
        }
        struct v4f_kv *kb = v4f_session_kv(b);
        CHECK(kb->page_map != NULL && kb->page_bytes > 0);
        CHECK(v4f_session_kv(a)->page_map == NULL);
        CHECK_EQ_INT(v4f_session_kv_bytes(a), v4f_session_kv_bytes(b));
        CHECK_EQ_INT(dir_entries(dir), 0); /* unlinked at creation */
        CHECK_EQ_INT(page_mappings(), 1);
        CHECK_STATUS(v4f_session_eval(a, toks, N_PROMPT, la, 0, NULL, &err), V4F_OK);
        CHECK_STATUS(v4f_session_eval(b, toks, N_PROMPT, lb, 0, NULL, &err), V4F_OK);
        CHECK_MSG(!memcmp(la, lb, (size_t)N_PROMPT * V * 4), "prec %d: prefill logits differ", p);
        /* the ratio-4 layers hold more rows than the indexer selects */
        CHECK(kb->layers[2].ratio == 4 && kb->layers[2].n_comp > 2 * m->cfg.idx_topk);
        CHECK(v4f_kv_paged_resident(kb) > 0);
        const float *ra = la + (size_t)(N_PROMPT - 1) * V, *rb = lb + (size_t)(N_PROMPT - 1) * V;
        float *da = malloc((size_t)V * 4), *db = malloc((size_t)V * 4);
        int32_t ta = argmax(ra, V), tb = argmax(rb, V);
        for (int i = 0; i < N_DECODE; i++) {
            CHECK_EQ_INT(ta, tb);
            CHECK_STATUS(v4f_session_decode(a, ta, da, &err), V4F_OK);
            CHECK_STATUS(v4f_session_decode(b, tb, db, &err), V4F_OK);
            if (memcmp(da, db, (size_t)V * 4)) {
                test_fail(__FILE__, __LINE__, "prec %d: decode logits differ at step %d", p, i);
                break;
            }
            ta = argmax(da, V);
            tb = argmax(db, V);
        }
        /* dropping the pages from RAM changes nothing: they come back from the file */
        v4f_kv_page_out(kb);
        CHECK_STATUS(v4f_session_decode(a, ta, da, &err), V4F_OK);
        CHECK_STATUS(v4f_session_decode(b, tb, db, &err), V4F_OK);
        CHECK_MSG(!memcmp(da, db, (size_t)V * 4), "prec %d: logits differ after page-out", p);
        free(da);
        free(db);
        v4f_session_free(a);
        v4f_session_free(b);
        CHECK_EQ_INT(page_mappings(), 0);
        CHECK_EQ_INT(dir_entries(dir), 0);
    }
    free(toks);
    free(la);
    free(lb);
    v4f_model_close(m);
}

TEST(kvpage_snapshot_roundtrip) {
    v4f_model *m = open_tiny();
    REQUIRE(m);
    const uint32_t V = m->cfg.n_vocab;
    const char *dir = page_dir();
    int32_t *toks = malloc(N_PROMPT * sizeof *toks);
    fill_tokens(m, toks, N_PROMPT);
    float *l0 = malloc((size_t)V * 4), *l1 = malloc((size_t)V * 4), *l2 = malloc((size_t)V * 4);
    v4f_err err = {0};
    v4f_session *a = new_session(m, V4F_PRECISION_DEFAULT, dir);
    v4f_session *b = new_session(m, V4F_PRECISION_DEFAULT, dir);
    v4f_session *c = new_session(m, V4F_PRECISION_DEFAULT, NULL);
    v4f_snapshot_mem sa = {0}, sb = {0}, sc = {0};
    if (!a || !b || !c) goto done;
    CHECK_STATUS(v4f_session_eval(a, toks, N_PROMPT, l0, V4F_EVAL_LOGITS_LAST, NULL, &err), V4F_OK);
    CHECK_STATUS(v4f_snapshot_mem_save(a, l0, V, &sa, &err), V4F_OK);
    /* paged -> paged (b has other state first) and paged -> RAM */
    CHECK_STATUS(v4f_session_prefill(b, toks + 3, 100, NULL, &err), V4F_OK);
    CHECK_STATUS(v4f_snapshot_mem_load(b, &sa, l1, V, &err), V4F_OK);
    CHECK_STATUS(v4f_snapshot_mem_load(c, &sa, l2, V, &err), V4F_OK);
    CHECK(!memcmp(l0, l1, (size_t)V * 4) && !memcmp(l0, l2, (size_t)V * 4));
    CHECK_STATUS(v4f_snapshot_mem_save(b, l1, V, &sb, &err), V4F_OK);
    CHECK_STATUS(v4f_snapshot_mem_save(c, l2, V, &sc, &err), V4F_OK);
    CHECK_MSG(sa.len == sb.len && !memcmp(sa.data, sb.data, sa.len), "paged re-snapshot differs");
    CHECK_MSG(sa.len == sc.len && !memcmp(sa.data, sc.data, sa.len), "RAM re-snapshot differs");
    int32_t t = argmax(l0, V);
    CHECK_STATUS(v4f_session_decode(a, t, l0, &err), V4F_OK);
    CHECK_STATUS(v4f_session_decode(b, t, l1, &err), V4F_OK);
    CHECK_STATUS(v4f_session_decode(c, t, l2, &err), V4F_OK);
    CHECK(!memcmp(l0, l1, (size_t)V * 4) && !memcmp(l0, l2, (size_t)V * 4));
done:
    v4f_snapshot_mem_free(&sa);
    v4f_snapshot_mem_free(&sb);
    v4f_snapshot_mem_free(&sc);
    v4f_session_free(a);
    v4f_session_free(b);
    v4f_session_free(c);
    CHECK_EQ_INT(page_mappings(), 0);
    CHECK_EQ_INT(dir_entries(dir), 0);
    free(toks);
    free(l0);
    free(l1);
    free(l2);
    v4f_model_close(m);
}

TEST(kvpage_errors) {
    v4f_config cfg;
    v4f_kv_published_config(&cfg);
    v4f_kv *kv = NULL;
    v4f_err err = {0};
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no/such/dir", test_tmp_dir());
    CHECK_STATUS(v4f_kv_new_paged(&cfg, 4096, true, false, missing, &kv, &err), V4F_STATUS_IO);
    CHECK(kv == NULL);
    CHECK_MSG(strstr(err.msg, missing) != NULL, "message lacks the path: %s", err.msg);
    /* space that cannot be reserved: a 1 MiB file-size limit in a child
     * (posix_fallocate fails with EFBIG exactly as it would with ENOSPC) */
    const char *dir = page_dir();
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {1 << 20, 1 << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        v4f_err e = {0};
        v4f_kv *k = NULL;
        v4f_status st = v4f_kv_new_paged(&cfg, 1u << 20, true, false, dir, &k, &e);
        int ok = st == V4F_STATUS_IO && !k && strstr(e.msg, "cannot reserve") &&
                 strstr(e.msg, dir) && strstr(e.msg, "bytes");
        if (!ok) fprintf(stderr, "child: status %d: %s\n", (int)st, e.msg);
        _exit(ok ? 0 : 1);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    CHECK_MSG(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "no clean error for an unreservable file");
    CHECK_EQ_INT(dir_entries(dir), 0);
    /* published model at 1M tokens: the file holds exactly the ratio-4 rows */
    uint64_t hot = 0, cold = 0;
    v4f_kv_step_working_set(&cfg, 1u << 20, true, 512, &hot, &cold);
    CHECK_EQ_INT(hot, 43ull * 128 * 512 * 4 + 21ull * 262144 * 68 + 20ull * 8192 * 711);
    CHECK_EQ_INT(cold, 21ull * 512 * (4095 + 711));
}

TEST(kvpage_fill_synthetic) {
    v4f_model *m = open_tiny();
    REQUIRE(m);
    v4f_session *s = new_session(m, V4F_PRECISION_DEFAULT, page_dir());
    if (s) {
        v4f_err err = {0};
        struct v4f_kv *kv = v4f_session_kv(s);
        v4f_kv_fill_synthetic(kv, 1000, 7);
        CHECK_EQ_INT(kv->layers[2].n_comp, 250);
        CHECK_EQ_INT(kv->layers[2].n_idx, 250);
        CHECK_EQ_INT(kv->layers[3].n_comp, 1000 / 128);
        CHECK_STATUS(v4f_session_restore_pos(s, 1000, 0, &err), V4F_OK);
        float *l = malloc((size_t)m->cfg.n_vocab * 4);
        CHECK_STATUS(v4f_session_decode(s, 5, l, &err), V4F_OK);
        bool finite = true;
        for (uint32_t i = 0; i < m->cfg.n_vocab; i++) finite = finite && isfinite(l[i]);
        CHECK_MSG(finite, "decode over synthetic rows gave non-finite logits");
        free(l);
        v4f_session_free(s);
    }
    v4f_model_close(m);
}
