/* train_plot: training curves drawn as one SVG file (loss, learning rate, acceptance length...),
 * for people who would rather look than read the JSON lines. x is the step; each series is
 * scaled to [0, ymax] on its own (series that share an axis pass the same ymax) and the legend
 * gives each series' scale. Written atomically. */
#ifndef AS_TRAIN_PLOT_H
#define AS_TRAIN_PLOT_H

struct as_plot_series {
    const char *label, *color;
    const double *x, *y;
    int n;
    double ymax; /* <= 0: the series' own maximum */
    int markers; /* 1: a dot at each point (sparse series such as evaluations) */
};

/* Returns 0, or -1 with as_fail naming PATH. Non-finite points are skipped. */
int as_plot_svg(const char *path, const char *title, const struct as_plot_series *s, int ns);

#endif
