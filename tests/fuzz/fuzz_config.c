/* fuzz_config: config.json parsing (as_config_parse) and, for configs it accepts, the RoPE
 * frequency setup that consumes the parsed numbers (as_rope_init). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "as_error.h"
#include "fuzz_util.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    struct as_model_config c;
    if (as_config_parse(path, &c) == 0) {
        FUZZ_CHECK(c.hidden > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0);
        FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0 && c.n_heads % c.n_kv_heads == 0);
        FUZZ_CHECK(c.vocab > 0 && c.intermediate > 0);
        if (c.head_dim <= 1 << 14) {
            float *inv = malloc(sizeof(float) * (size_t)(c.head_dim / 2));
            (void)as_rope_init(&c, inv);
            free(inv);
        }
    } else {
        FUZZ_CHECK(as_last_error()[0] != 0);
    }
    as_clear_error();
    close(fd);
    return 0;
}
