/*
 * requant.c - routed experts into the other published layout (see
 * requant.h).
 */
#include "model/requant.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/ggml_type.h"
#include "core/threadpool.h"
#include "quant/quant.h"

/* 0: not a routed expert tensor; 1: gate/up; 2: down */
static int expert_kind(const v4f_gguf_tensor *t) {
    static const char *const gu[] = {".ffn_gate_exps.weight", ".ffn_up_exps.weight"};
    static const char down[] = ".ffn_down_exps.weight";
    const size_t n = t->name.len;
    if (t->n_dims != 3 || strncmp(t->name.ptr, "blk.", 4)) return 0;
    for (size_t i = 0; i < 2; i++) {
        const size_t k = strlen(gu[i]);
        if (n > k && !memcmp(t->name.ptr + n - k, gu[i], k)) return 1;
    }
    if (n > sizeof down - 1 && !memcmp(t->name.ptr + n - (sizeof down - 1), down, sizeof down - 1)) return 2;
    return 0;
}

static uint32_t target_type(bool q2, int kind) {
    if (!q2) return V4F_TYPE_Q4_K;
    return kind == 1 ? V4F_TYPE_IQ2_XXS : V4F_TYPE_Q2_K;
}

typedef struct job {
    const v4f_gguf_tensor *t;
    uint32_t type_out;
    uint64_t rows, cols, in_row, out_row; /* per expert; row bytes */
    uint64_t e0;                          /* first expert of this batch */
    float **f32;                          /* [thread] rows x cols */
    uint8_t **out;                        /* [slot] one expert's output */
    size_t *out_len;
} job;

static void expert_task(void *ctx, int64_t slot, int thread) {
    job *j = ctx;
    const uint64_t e = j->e0 + (uint64_t)slot;
    const uint8_t *src = (const uint8_t *)j->t->data + e * j->rows * j->in_row;
    float *x = j->f32[thread];
    for (uint64_t r = 0; r < j->rows; r++) v4f_dequant_row_ref(j->t->type, src + r * j->in_row, x + r * j->cols, (int64_t)j->cols);
    j->out_len[slot] = v4f_quantize_rows(j->type_out, x, j->out[slot], (int64_t)j->rows, (int64_t)j->cols, NULL);
}

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

v4f_status v4f_requant(const v4f_model *m, const char *out_path, const v4f_requant_opts *o, v4f_requant_stats *st,
                       v4f_err *err) {
    memset(st, 0, sizeof *st);
    const char *tgt = o->experts ? o->experts : "";
    if (strcmp(tgt, "q2") && strcmp(tgt, "q4"))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "unknown expert layout '%s' (q2 or q4)", tgt);
    const bool q2 = tgt[1] == '2';
    const v4f_gguf *g = m->gguf;
    if (same_file(v4f_gguf_path(g), out_path))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "the output %s is the input file", out_path);
    const uint64_t nt = v4f_gguf_n_tensors(g);
    uint64_t n_change = 0, n_exp = 0, max_rows_cols = 0, max_out = 0;
    for (uint64_t i = 0; i < nt; i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        const int k = expert_kind(t);
        if (!k) continue;
        n_exp++;
        const uint32_t ty = target_type(q2, k);
        if (t->type == ty) continue;
        uint64_t rb = 0;
        if (!v4f_type_row_bytes(ty, t->ne[0], &rb) || !v4f_quant_supported(t->type))
            return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "tensor '%.*s': %s rows of %llu cannot become %s",
                               (int)t->name.len, t->name.ptr, v4f_type_name(t->type), (unsigned long long)t->ne[0],
                               v4f_type_name(ty));
        n_change++;
        if (t->ne[0] * t->ne[1] > max_rows_cols) max_rows_cols = t->ne[0] * t->ne[1];
        if (rb * t->ne[1] > max_out) max_out = rb * t->ne[1];
    }
    if (!n_exp) return v4f_err_set(err, V4F_STATUS_LAYOUT, "the model has no routed expert tensors");
    if (!n_change)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "the routed experts are already in the %s layout", tgt);

    v4f_gguf_writer *w = NULL;
    v4f_status s = v4f_gguf_writer_open(out_path, v4f_gguf_alignment(g), &w, err);
    if (s) return s;
    for (uint64_t i = 0; i < v4f_gguf_n_kv(g); i++) v4f_gguf_writer_set_kv(w, v4f_gguf_kv_at(g, i));
    v4f_gguf_writer_set_str(w, "v4flash.requantized_experts", tgt);
    uint64_t total = 0;
    for (uint64_t i = 0; i < nt && !s; i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        const int k = expert_kind(t);
        const uint32_t ty = k ? target_type(q2, k) : t->type;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        s = v4f_gguf_writer_add_tensor(w, name, ty, t->n_dims, t->ne, err);
        uint64_t rb = 0;
        if (!s && v4f_type_row_bytes(ty, t->ne[0], &rb)) total += rb * (t->n_elems / t->ne[0]);
    }
    if (!s) s = v4f_gguf_writer_begin_data(w, err);

    v4f_pool *pool = v4f_pool_new(o->n_threads);
    const int T = v4f_pool_size(pool);
    job j = {0};
    j.f32 = calloc((size_t)T, sizeof *j.f32);
    j.out = calloc((size_t)T, sizeof *j.out);
    j.out_len = calloc((size_t)T, sizeof *j.out_len);
    bool oom = !j.f32 || !j.out || !j.out_len;
    for (int i = 0; i < T && !oom; i++) {
        j.f32[i] = malloc(max_rows_cols * sizeof(float));
        j.out[i] = malloc(max_out ? max_out : 1);
        oom = !j.f32[i] || !j.out[i];
    }
    if (!s && oom) s = v4f_err_set(err, V4F_STATUS_OOM, "cannot allocate %d expert buffers of %.1f MiB", T,
                                   (double)(max_rows_cols * 4 + max_out) / 1048576.0);
    uint64_t done = 0;
    for (uint64_t i = 0; i < nt && !s; i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        const int k = expert_kind(t);
        st->n_tensors++;
        st->bytes_in += t->n_bytes;
        if (!k || t->type == target_type(q2, k)) {
            s = v4f_gguf_writer_write_data(w, t->data, t->n_bytes, err);
            done += t->n_bytes;
            st->bytes_out += t->n_bytes;
        } else {
            j.t = t;
            j.type_out = target_type(q2, k);
            j.cols = t->ne[0];
            j.rows = t->ne[1];
            v4f_type_row_bytes(t->type, j.cols, &j.in_row);
            v4f_type_row_bytes(j.type_out, j.cols, &j.out_row);
            const uint64_t n_e = t->ne[2];
            for (j.e0 = 0; j.e0 < n_e && !s; j.e0 += (uint64_t)T) {
                const uint64_t n = n_e - j.e0 < (uint64_t)T ? n_e - j.e0 : (uint64_t)T;
                v4f_pool_run(pool, (int64_t)n, expert_task, &j);
                for (uint64_t e = 0; e < n && !s; e++) {
                    if (j.out_len[e] != j.rows * j.out_row)
                        s = v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "tensor '%.*s': quantizing expert %llu failed",
                                        (int)t->name.len, t->name.ptr, (unsigned long long)(j.e0 + e));
                    else
                        s = v4f_gguf_writer_write_data(w, j.out[e], j.out_len[e], err);
                    done += j.out_len[e];
                    st->bytes_out += j.out_len[e];
                }
            }
            st->n_converted++;
        }
        if (o->progress) o->progress(o->progress_ud, done, total);
    }
    for (int i = 0; j.f32 && i < T; i++) free(j.f32[i]);
    for (int i = 0; j.out && i < T; i++) free(j.out[i]);
    free(j.f32);
    free(j.out);
    free(j.out_len);
    v4f_pool_free(pool);
    if (s) {
        v4f_gguf_writer_abort(w);
        return s;
    }
    return v4f_gguf_writer_close(w, err);
}
