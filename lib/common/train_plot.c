#include "train_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "as_error.h"
#include "atomic_file.h"

enum { PLOT_W = 720, PLOT_H = 400, PLOT_PAD = 48 };

static double series_ymax(const struct as_plot_series *s) {
    if (s->ymax > 0) return s->ymax;
    double m = 0;
    for (int i = 0; i < s->n; i++)
        if (isfinite(s->y[i])) m = fmax(m, s->y[i]);
    return m > 0 ? m : 1;
}

/* Text in an SVG element: the five XML specials escaped (titles may hold file names). */
static void put_text(FILE *f, const char *t) {
    for (; *t; t++)
        switch (*t) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&apos;", f);
            break;
        default:
            fputc(*t, f);
        }
}

int as_plot_svg(const char *path, const char *title, const struct as_plot_series *s, int ns) {
    double x0 = INFINITY, x1 = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].x[i])) x0 = fmin(x0, s[k].x[i]), x1 = fmax(x1, s[k].x[i]);
    if (!(x0 <= x1)) x0 = 0, x1 = 1;
    if (x1 == x0) x1 = x0 + 1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return as_fail("file %s: cannot build the plot", path);
    const double W = PLOT_W - 2.0 * PLOT_PAD, H = PLOT_H - 2.0 * PLOT_PAD;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#ccc\"/>\n"
            "<text x=\"%d\" y=\"%d\" font-size=\"11\">step %.0f</text>\n"
            "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">step %.0f</text>\n",
            PLOT_W, PLOT_H, PLOT_PAD, PLOT_PAD, W, H, PLOT_PAD, PLOT_H - PLOT_PAD + 14, x0,
            PLOT_W - PLOT_PAD, PLOT_H - PLOT_PAD + 14, x1);
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"13\">", PLOT_PAD);
    put_text(f, title);
    fprintf(f, "</text>\n");
    for (int k = 0; k < ns; k++) {
        double ym = series_ymax(&s[k]);
        /* legend: one line per series under the title, with the value at the top of the box */
        fprintf(f, "<text x=\"%d\" y=\"36\" font-size=\"11\" fill=\"%s\">", PLOT_PAD + 220 * k,
                s[k].color);
        put_text(f, s[k].label);
        fprintf(f, " (top = %.4g)</text>\n", ym);
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" points=\"", s[k].color);
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].x[i]) && isfinite(s[k].y[i]))
                fprintf(f, "%.1f,%.1f ", PLOT_PAD + W * (s[k].x[i] - x0) / (x1 - x0),
                        PLOT_H - PLOT_PAD - H * fmin(fmax(s[k].y[i] / ym, 0), 1));
        fprintf(f, "\"/>\n");
        if (s[k].markers)
            for (int i = 0; i < s[k].n; i++)
                if (isfinite(s[k].x[i]) && isfinite(s[k].y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                            PLOT_PAD + W * (s[k].x[i] - x0) / (x1 - x0),
                            PLOT_H - PLOT_PAD - H * fmin(fmax(s[k].y[i] / ym, 0), 1), s[k].color);
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        free(buf);
        return as_fail("file %s: cannot build the plot", path);
    }
    int rc = as_atomic_write_file(path, buf, len);
    free(buf);
    return rc;
}
