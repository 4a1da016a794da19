/* as-draft plot: the training curves of one or more (resumed) runs' JSON lines as an SVG. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "train_plot.h"

struct curve {
    double *x, *y;
    int n, cap;
};

/* A resumed run logs again from its checkpoint's step: its lines replace the killed run's. */
static void curve_add(struct curve *c, double x, double y) {
    while (c->n > 0 && c->x[c->n - 1] >= x)
        c->n--;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->x = as_xrealloc(c->x, (size_t)c->cap * sizeof(double));
        c->y = as_xrealloc(c->y, (size_t)c->cap * sizeof(double));
    }
    c->x[c->n] = x, c->y[c->n++] = y;
}

int cmd_plot(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[2], "-o"))
        as_die("plot: as-draft plot TRAIN_LOG.jsonl -o CURVES.svg");
    const char *path = argv[1];
    FILE *f = fopen(path, "r");
    if (!f) as_die("file %s: cannot open", path);
    struct curve loss = {0}, lr = {0}, al = {0};
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!json_is_object(o))
            as_die("file %s: line %ld: not a JSON object (%s)", path, lineno, je.text);
        json_t *st = json_object_get(o, "step"), *lo = json_object_get(o, "loss"),
               *a = json_object_get(o, "al"), *r = json_object_get(o, "lr");
        if (json_is_number(st) && json_is_number(lo)) {
            curve_add(&loss, json_number_value(st), json_number_value(lo));
            if (json_is_number(r)) curve_add(&lr, json_number_value(st), json_number_value(r));
        }
        if (json_is_number(st) && json_is_number(a))
            curve_add(&al, json_number_value(st), json_number_value(a));
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (!loss.n && !al.n) as_die("file %s: no training lines (step with loss or al)", path);
    int best = -1;
    for (int i = 0; i < al.n; i++)
        if (best < 0 || al.y[i] > al.y[best]) best = i;
    char title[512];
    int n = snprintf(title, sizeof title, "as-draft train: %s, %d loss points", path, loss.n);
    if (best >= 0)
        snprintf(title + n, sizeof title - (size_t)n, ", best AL %.3f at step %.0f", al.y[best],
                 al.x[best]);
    /* AL on a 0..max scale hides its rise from 1.0; plotting AL - 1 (the accepted drafts per
     * target pass) keeps the scale honest and the rise visible */
    for (int i = 0; i < al.n; i++)
        al.y[i] -= 1;
    const struct as_plot_series s[3] = {{"training loss", "blue", loss.x, loss.y, loss.n, 0, 0},
                                        {"AL - 1 (accepted per pass)", "red", al.x, al.y, al.n, 0, 1},
                                        {"lr", "gray", lr.x, lr.y, lr.n, 0, 0}};
    if (as_plot_svg(argv[3], title, s, 3) != 0) as_die_last();
    free(loss.x), free(loss.y), free(lr.x), free(lr.y), free(al.x), free(al.y);
    return 0;
}
