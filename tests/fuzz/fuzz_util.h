/* fuzz_util: helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c).
 *
 * The parsers under test that take a path read the fuzz input from a memfd through
 * /proc/self/fd/N: no file system traffic, no temporary files left behind by a crash. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* A memfd holding data[0, n), rewound; path receives "/proc/self/fd/N". -1 on failure. */
static inline int fuzz_memfd(const uint8_t *data, size_t n, char *path, size_t path_cap) {
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, data + done, n - done);
        if (k <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)k;
    }
    lseek(fd, 0, SEEK_SET);
    snprintf(path, path_cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* An invariant of the parser's output does not hold: a bug even without a sanitizer report. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
