/* chat_template: see chat_template.h. */
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "as_error.h"
#include "gguf.h"

struct text {
    char *s;
    size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = 2 * (t->len + n + 1);
        t->s = as_xrealloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = 0;
}

static void text_puts(struct text *t, const char *s) {
    text_add(t, s, strlen(s));
}

/* ---- ChatML (SmolLM2, Qwen2/2.5/3): <|im_start|>ROLE\nCONTENT<|im_end|>\n per message ---- */

static int chatml_detect(const char *tmpl) {
    return strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>");
}

/* The default system message some ChatML templates insert when the first message is not a system
 * one (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."; Qwen2.5 likewise): the literal
 * text right after '<|im_start|>system' and its newline up to '<|im_end|>'. Where that span holds
 * a quote or a Jinja brace, it is an expression (messages[0]['content']), not a default. */
static char *chatml_default_system(const char *tmpl) {
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n')
            q++;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end || end == q || memchr(q, '\'', (size_t)(end - q)) ||
            memchr(q, '"', (size_t)(end - q)) || memchr(q, '{', (size_t)(end - q)))
            continue;
        struct text t = {0};
        for (const char *c = q; c < end; c++) { /* Jinja string escapes: \n, \\ */
            if (c[0] == '\\' && c + 1 < end && (c[1] == 'n' || c[1] == '\\')) {
                text_add(&t, c[1] == 'n' ? "\n" : "\\", 1);
                c++;
            } else {
                text_add(&t, c, 1);
            }
        }
        return t.s;
    }
    return NULL;
}

static void chatml_message(struct text *t, const char *role, const char *content) {
    text_puts(t, "<|im_start|>");
    text_puts(t, role);
    text_puts(t, "\n");
    text_puts(t, content);
    text_puts(t, "<|im_end|>\n");
}

static int chatml_render(const char *tmpl, const struct as_chat_msg *m, int n, int add_gen,
                         struct text *t) {
    char *def = chatml_default_system(tmpl);
    if (def && strcmp(m[0].role, "system") != 0) chatml_message(t, "system", def);
    free(def);
    for (int i = 0; i < n; i++)
        chatml_message(t, m[i].role, m[i].content);
    if (add_gen) text_puts(t, "<|im_start|>assistant\n");
    return 0;
}

/* ---- the table ---- */

struct chat_family {
    const char *name;
    int (*detect)(const char *tmpl);
    int (*render)(const char *tmpl, const struct as_chat_msg *m, int n, int add_gen,
                  struct text *t);
};

static const struct chat_family families[] = {
    {"chatml", chatml_detect, chatml_render},
};
#define N_FAMILIES (sizeof families / sizeof families[0])

static const struct chat_family *family_of(const char *tmpl) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (families[i].detect(tmpl)) return &families[i];
    char names[256] = "";
    for (size_t i = 0; i < N_FAMILIES; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                 families[i].name);
    as_fail("chat template not recognised (supported families: %s); it begins \"%.40s\"", names,
            tmpl);
    return NULL;
}

const char *as_chat_template_family(const char *tmpl) {
    const struct chat_family *f = family_of(tmpl);
    return f ? f->name : NULL;
}

char *as_chat_render(const char *tmpl, const struct as_chat_msg *msgs, int n,
                     int add_generation_prompt) {
    if (n < 1) {
        as_fail("chat: no messages to render");
        return NULL;
    }
    const struct chat_family *f = family_of(tmpl);
    if (!f) return NULL;
    struct text t = {0};
    text_add(&t, "", 0);
    if (f->render(tmpl, msgs, n, add_generation_prompt, &t)) {
        free(t.s);
        return NULL;
    }
    return t.s;
}

char *as_chat_user_prompt(const char *tmpl, const char *user) {
    struct as_chat_msg m = {"user", user};
    return as_chat_render(tmpl, &m, 1, 1);
}

char *as_chat_template_open(const char *path) {
    size_t len = strlen(path);
    if (len > 5 && strcmp(path + len - 5, ".gguf") == 0) {
        struct as_gguf *g = as_gguf_open(path);
        if (!g) return NULL;
        const char *s = as_gguf_get_str(g, "tokenizer.chat_template");
        char *r = s ? as_xstrdup(s) : NULL;
        as_gguf_close(g);
        if (!r) as_fail("%s: no tokenizer.chat_template (not a chat model?)", path);
        return r;
    }
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", path);
    json_error_t err;
    json_t *cfg = json_load_file(cfg_path, 0, &err);
    if (!cfg) {
        as_fail("%s: %s", cfg_path, err.text);
        return NULL;
    }
    json_t *ct = json_object_get(cfg, "chat_template");
    const char *s = json_string_value(ct);
    if (json_is_array(ct)) { /* [{"name": "default", "template": ...}, ...] */
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            if (json_is_string(json_object_get(e, "name")) &&
                strcmp(json_string_value(json_object_get(e, "name")), "default") == 0)
                s = json_string_value(json_object_get(e, "template"));
        }
    }
    char *r = s ? as_xstrdup(s) : NULL;
    json_decref(cfg);
    if (!r) as_fail("%s: no chat_template (not a chat model?)", cfg_path);
    return r;
}
