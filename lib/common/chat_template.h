/* chat_template: turn chat messages into the prompt text an instruct model was trained on, from
 * the model's own chat template (tokenizer_config.json "chat_template", or the GGUF key
 * tokenizer.chat_template). Templates are Jinja programs; we do not interpret Jinja. Each template
 * family we reproduce is one row of a table: a detector that recognises the family's template text
 * and a renderer that writes what that template would (tests/tools/chat.bats holds the output to
 * jinja2 rendering the real template). A template no row recognises is refused by name. */
#ifndef AS_CHAT_TEMPLATE_H
#define AS_CHAT_TEMPLATE_H

struct as_chat_msg {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
};

/* The chat template of a model path (checkpoint directory or FILE.gguf); malloc'd, or NULL with
 * as_fail when the model has none. */
char *as_chat_template_open(const char *path);

/* The family name that recognises TMPL, or NULL with as_fail naming the supported families. */
const char *as_chat_template_family(const char *tmpl);

/* Render N >= 1 messages through TMPL; ADD_GENERATION_PROMPT appends the assistant's header.
 * Returns a malloc'd string, or NULL with as_fail. */
char *as_chat_render(const char *tmpl, const struct as_chat_msg *msgs, int n,
                     int add_generation_prompt);

/* The prompt for one user message with the assistant's header appended (as-gen --chat, as-draft
 * --chat): as_chat_render of [{"user", USER}]. */
char *as_chat_user_prompt(const char *tmpl, const char *user);

#endif
