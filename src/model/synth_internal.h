/*
 * synth_internal.h - private pieces shared by synth.c and synth_vocab.c.
 */
#ifndef V4F_MODEL_SYNTH_INTERNAL_H
#define V4F_MODEL_SYNTH_INTERNAL_H

#include "model/synth.h"

typedef struct v4f_synth_vocab {
    char **tokens;       /* [n_tokens] owned */
    int32_t *token_type; /* [n_tokens] 1 normal, 3 control */
    uint32_t n_tokens;
    char **merges;       /* [n_merges] "A B", owned */
    uint32_t n_merges;
} v4f_synth_vocab;

v4f_status v4f_synth_vocab_build(uint32_t n_vocab, v4f_synth_vocab *v, v4f_err *err);
void v4f_synth_vocab_free(v4f_synth_vocab *v);

#endif /* V4F_MODEL_SYNTH_INTERNAL_H */
