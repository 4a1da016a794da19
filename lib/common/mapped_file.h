/* mapped_file: a process-wide, refcounted cache of read-only file mappings.
 *
 * By-reference payloads of the tensor stream point into files (input safetensors, scratch arenas).
 * Three hundred references into one 2 GiB checkpoint must map it once: as_mapped_file_get() looks
 * the file up by path and identity (device, inode) and hands out the shared mapping. Arena files
 * grow while a pipeline runs; a request beyond the current mapping re-maps the file at its new size
 * and keeps the old mapping alive until the last holder puts it (pointers handed out stay valid).
 */
#ifndef AS_MAPPED_FILE_H
#define AS_MAPPED_FILE_H

#include <stdint.h>

struct as_mapped_file {
    const char *path;
    uint64_t size;      /* file size seen by the latest get (stat) */
    int64_t mtime_ns;   /* modification time seen by the latest get */
    const uint8_t *map; /* covers [0, map_size) of the file; NULL when map_size == 0 */
    uint64_t map_size;
};

/* Map PATH (or reuse a mapping) so that min(need, file size) bytes are covered. Fails with
 * as_fail("file PATH: problem") when the file is missing, not a regular file or cannot be mapped.
 * A file shorter than `need` is not an error here: callers compare `size` with what they need
 * (and with what a reference recorded) to word the error. size/mtime are the current stat. */
struct as_mapped_file *as_mapped_file_get(const char *path, uint64_t need);
/* Drop one hold; the mapping goes when no holder is left. */
void as_mapped_file_put(struct as_mapped_file *m);

#endif
