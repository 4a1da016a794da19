/* as-gen --batch FILE: many prompts, decoded B at a time (continuous batching): one JSON object
 * per input line ({"prompt": TEXT, and optionally "steps", "temp", "seed", "chat", "system",
 * defaulting to the command line's), one JSON line per prompt out, in input order:
 *   {"index": I, "text": TEXT, "ids": [generated token ids]}
 * TEXT is what `as-gen` prints for that prompt alone (without the final newline; bytes that are
 * no UTF-8, which byte-level pieces can leave, become U+FFFD; "ids" is exact). The B sequences
 * share every weight pass (as_forward_batch) and a finished one is replaced by the next prompt at
 * once; each sequence's logits are the bits one-at-a-time decoding computes and each samples
 * with its own seed's stream, so the output is what B separate as-gen runs print. Every line is
 * read and checked before anything is generated: bad input writes nothing. */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "chat_template.h"
#include "forward.h"
#include "gen_sample.h"
#include "model.h"
#include "tokenizer.h"

#include "gen_batch.h"

struct job {
    int *toks; /* prompt, then generated; steps + 1 slots */
    int n_prompt, add_bos, steps, chat;
    float temp;
    uint64_t rng;
};

struct slot {
    struct job *job;
    struct as_run_state *s;
    int index, n; /* tokens in job->toks */
    int finished;
};

/* text (len bytes) with every byte that starts no valid UTF-8 sequence as U+FFFD */
static json_t *json_text(const char *t, size_t len) {
    json_t *j = json_stringn(t, len);
    if (j) return j;
    char *o = as_xmalloc(3 * len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)t[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len;
        for (size_t j = 1; ok && j < n; j++)
            ok = ((unsigned char)t[i + j] >> 6) == 2;
        if (ok && n > 1) { /* one sequence's worth checked by jansson (overlongs, surrogates) */
            json_t *one = json_stringn(t + i, n);
            ok = one != NULL;
            json_decref(one);
        }
        if (ok) {
            memcpy(o + k, t + i, n), k += n, i += n;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3), k += 3, i++;
        }
    }
    j = json_stringn(o, k);
    free(o);
    return j;
}

/* The job of one input line; -1 with as_fail naming FILE:LINE. */
static int job_parse(const struct as_gen_batch_opts *o, struct as_tokenizer *tok, const char *dir,
                     const char *line, int lineno, struct job *jb) {
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);
    const char *src = o->path;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return as_fail("%s:%d: not a JSON object%s%s", src, lineno, j ? "" : ": ",
                       j ? "" : err.text);
    }
    json_t *p = json_object_get(j, "prompt"), *v;
    int rc = -1;
    char *chat_text = NULL;
    if (!json_is_string(p)) {
        as_fail("%s:%d: \"prompt\" missing or not a string", src, lineno);
        goto out;
    }
    jb->steps = o->steps, jb->temp = o->temp, jb->chat = o->chat;
    uint64_t seed = o->seed;
    const char *system = o->system;
    if ((v = json_object_get(j, "steps"))) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 1 << 20) {
            as_fail("%s:%d: \"steps\" must be a positive integer", src, lineno);
            goto out;
        }
        jb->steps = (int)json_integer_value(v);
    }
    if ((v = json_object_get(j, "temp"))) {
        if (!json_is_number(v) || !(json_number_value(v) >= 0)) {
            as_fail("%s:%d: \"temp\" must be a number >= 0", src, lineno);
            goto out;
        }
        jb->temp = (float)json_number_value(v);
    }
    if ((v = json_object_get(j, "seed"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            as_fail("%s:%d: \"seed\" must be an integer >= 0", src, lineno);
            goto out;
        }
        seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(j, "chat"))) {
        if (!json_is_boolean(v)) {
            as_fail("%s:%d: \"chat\" must be true or false", src, lineno);
            goto out;
        }
        jb->chat = json_is_true(v);
    }
    if ((v = json_object_get(j, "system"))) {
        if (!json_is_string(v)) {
            as_fail("%s:%d: \"system\" must be a string", src, lineno);
            goto out;
        }
        system = json_string_value(v);
    }
    if (system && !jb->chat) {
        as_fail("%s:%d: \"system\" needs chat", src, lineno);
        goto out;
    }
    jb->rng = seed ? seed : 1; /* as as-gen seeds its sampler */
    const char *prompt = json_string_value(p);
    if (jb->chat) { /* the rendered conversation replaces the prompt, as in as-gen --chat */
        char *tmpl = as_chat_template_open(dir);
        if (!tmpl) goto out;
        struct as_chat_msg msgs[2] = {{"system", system}, {"user", prompt}};
        chat_text = as_chat_render(tmpl, system ? msgs : msgs + 1, system ? 2 : 1, 1);
        free(tmpl);
        if (!chat_text) goto out;
        prompt = chat_text;
    }
    jb->add_bos = jb->chat ? 0 : as_tokenizer_add_bos(tok);
    int32_t *ids;
    size_t n;
    if (as_tokenizer_encode(tok, prompt, strlen(prompt), jb->add_bos, &ids, &n) != 0) goto out;
    if (n == 0 || (int)n > jb->steps + 1) {
        free(ids);
        as_fail("%s:%d: prompt is %zu tokens, %s", src, lineno, n - (size_t)jb->add_bos,
                n ? "more than its steps" : "and the model adds no BOS");
        goto out;
    }
    jb->toks = as_xmalloc(((size_t)jb->steps + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++)
        jb->toks[i] = ids[i];
    free(ids);
    jb->n_prompt = (int)n;
    rc = 0;
out:
    free(chat_text);
    json_decref(j);
    return rc;
}

/* Appends token t's piece (after prev) to the growing text, as as-gen prints it. */
static int text_piece(struct as_tokenizer *tok, int prev, int t, char **buf, size_t *len,
                      size_t *cap) {
    char piece[256];
    int n = as_tokenizer_decode_piece(tok, prev, t, piece, sizeof piece);
    if (n < 0) return -1;
    size_t k = (size_t)n < sizeof piece ? (size_t)n : sizeof piece - 1;
    if (*len + k + 1 > *cap) {
        *cap = 2 * (*len + k + 1);
        *buf = as_xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, piece, k), *len += k;
    return 0;
}

/* The finished job's JSON line. */
static int job_write(struct as_tokenizer *tok, const struct job *jb, int index, int n, FILE *out) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    /* as-gen prints the prompt's pieces after the BOS (not for chat), then the answer's */
    for (int i = jb->chat ? jb->n_prompt : jb->add_bos; i < n; i++)
        if (text_piece(tok, i ? jb->toks[i - 1] : -1, jb->toks[i], &buf, &len, &cap)) {
            free(buf);
            return -1;
        }
    json_t *ids = json_array();
    for (int i = jb->n_prompt; i < n; i++)
        json_array_append_new(ids, json_integer(jb->toks[i]));
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(index));
    json_object_set_new(o, "text", json_text(buf ? buf : "", len));
    json_object_set_new(o, "ids", ids);
    free(buf);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    int rc = fprintf(out, "%s\n", s) < 0 ? as_fail("writing the output failed") : 0;
    free(s);
    return rc;
}

/* as-gen's loop for one sequence after its logits are fresh: the next token, or the end.
 * Returns 1 when the sequence needs a forward of toks[n-1], 0 when it is finished. */
static int slot_step(struct slot *sl, const struct as_model *m, int stop0, int stop1, float *e) {
    struct job *jb = sl->job;
    if (sl->n > jb->steps) return 0;
    int next = as_sample_token(sl->s->logits, m->cfg.vocab, jb->temp, e, &jb->rng);
    if (next == stop0 || next == stop1) return 0;
    jb->toks[sl->n++] = next;
    return sl->n <= jb->steps;
}

int as_gen_batch_run(const struct as_model *m, struct as_tokenizer *tok, const char *dir,
                     const struct as_gen_batch_opts *o) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++)
            if (m->layers[l].packed[w])
                return as_fail("--batch: %s has packed linears (layer %d); batched decoding runs "
                               "f32 weights",
                               dir, l);
    FILE *in = strcmp(o->path, "-") ? fopen(o->path, "r") : stdin;
    if (!in) return as_fail("%s: %s", o->path, strerror(errno));
    struct job *jobs = NULL;
    int n_jobs = 0, cap = 0, lineno = 0, rc = -1;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, in)) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)got) continue; /* blank lines carry no prompt */
        if (n_jobs == cap)
            jobs = as_xrealloc(jobs, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *jobs);
        memset(&jobs[n_jobs], 0, sizeof *jobs);
        if (job_parse(o, tok, dir, line, lineno, &jobs[n_jobs]) != 0) goto out;
        n_jobs++;
    }
    if (ferror(in)) {
        as_fail("%s: %s", o->path, strerror(errno));
        goto out;
    }
    int B = o->batch, stop0 = as_tokenizer_bos(tok), stop1 = as_tokenizer_eos(tok);
    struct as_run_state *w = as_state_new(m, B, B, 0); /* its cache goes unused */
    struct slot *slots = as_xcalloc((size_t)B, sizeof *slots);
    struct as_run_state **seqs = as_xmalloc((size_t)B * sizeof *seqs);
    int *tokens = as_xmalloc((size_t)B * sizeof *tokens),
        *done = as_xcalloc(n_jobs + 1, sizeof(int));
    int *ends = as_xcalloc(n_jobs + 1, sizeof(int));
    float *e = as_xmalloc((size_t)m->cfg.vocab * sizeof(float));
    int next_job = 0, written = 0, active = 0;
    long generated = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!w) goto free_run;
    for (;;) {
        /* fill free slots: prefill the next prompts (as as-gen does, the same bits) */
        for (int b = 0; b < B && next_job < n_jobs; b++) {
            if (slots[b].job) continue;
            struct job *jb = &jobs[next_job];
            struct slot *sl = &slots[b];
            sl->s = as_state_new(m, jb->n_prompt, jb->steps + 1, 0);
            if (!sl->s || as_forward(m, sl->s, jb->toks, jb->n_prompt, AS_LOGITS_LAST, NULL))
                goto free_run;
            sl->job = jb, sl->index = next_job++, sl->n = jb->n_prompt, active++;
            sl->finished = !slot_step(sl, m, stop0, stop1, e); /* a stop token at once */
        }
        /* retire finished sequences; their lines go out in input order */
        for (int b = 0; b < B; b++) {
            struct slot *sl = &slots[b];
            if (!sl->job || !sl->finished) continue;
            done[sl->index] = 1, ends[sl->index] = sl->n;
            generated += ends[sl->index] - sl->job->n_prompt;
            as_state_free(sl->s);
            memset(sl, 0, sizeof *sl);
            active--;
        }
        while (written < n_jobs && done[written]) {
            if (job_write(tok, &jobs[written], written, ends[written], stdout) != 0) goto free_run;
            free(jobs[written].toks), jobs[written].toks = NULL;
            written++;
        }
        if (next_job < n_jobs && active < B) continue; /* refill before the next step */
        if (!active) break;
        /* one batched step of every running sequence */
        int nb = 0;
        for (int b = 0; b < B; b++)
            if (slots[b].job)
                seqs[nb] = slots[b].s, tokens[nb++] = slots[b].job->toks[slots[b].n - 1];
        if (as_forward_batch(m, w, seqs, tokens, nb) != 0) goto free_run;
        for (int b = 0; b < B; b++)
            if (slots[b].job) slots[b].finished = !slot_step(&slots[b], m, stop0, stop1, e);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (o->verbose) {
        double dt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        fprintf(stderr,
                "%s: %d prompts, %ld tokens generated in %.3f s (%.0f tokens/s, batch %d)\n",
                as_progname(), n_jobs, generated, dt, generated / dt, B);
    }
    rc = fflush(stdout) == 0 ? 0 : as_fail("writing the output failed");
free_run:
    for (int b = 0; b < B; b++)
        if (slots[b].job) as_state_free(slots[b].s);
    as_state_free(w);
    free(slots), free(seqs), free(tokens), free(done), free(ends), free(e);
out:
    for (int i = 0; i < n_jobs; i++)
        free(jobs[i].toks);
    free(jobs);
    free(line);
    if (in != stdin) fclose(in);
    return rc;
}
