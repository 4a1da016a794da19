/* atomic_file: write a file or a directory so that a crash never leaves a half one in place.
 * Files: write PATH.tmp.HOST.PID, fsync, rename over PATH, fsync the directory.
 * Directories: build DIR.tmp.HOST.PID/, fsync its files, rename to DIR (an existing DIR is replaced).
 * Each output is locked (flock on PATH.lock) while it is written: a second run writing the same
 * output fails at once with a message naming the holder, or waits when AS_LOCK_WAIT=1.
 */
#ifndef AS_ATOMIC_FILE_H
#define AS_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

struct as_atomic_file {
    char *path;
    char *tmp_path;
    FILE *fp;
    int lock_fd; /* flock on PATH.lock; -2 where the filesystem has no locks */
};

int as_atomic_open(struct as_atomic_file *af, const char *path);
int as_atomic_commit(struct as_atomic_file *af); /* fflush, fsync, fclose, rename, fsync dir */
void as_atomic_abort(struct as_atomic_file *af); /* close and unlink the temporary */
/* Convenience: write a whole buffer to PATH atomically. */
int as_atomic_write_file(const char *path, const void *data, size_t n);

/* The output lock alone, for a writer that stages PATH its own way (gguf_pack.c verifies under
 * another name): returns a token to pass to as_output_unlock (-2 where the filesystem has no
 * locks), or -1 with as_fail naming the run that holds PATH. */
int as_output_lock(const char *path);
void as_output_unlock(const char *path, int token);

/* Copy SRC to DST (plain, not atomic: DST is inside a staged directory). Returns 0, 1 when SRC
 * does not exist (optional files such as tokenizer.model), -1 with as_fail on an I/O error. */
int as_copy_file(const char *src, const char *dst);

/* Directory staging: returns DIR.tmp.HOST.PID created fresh (caller frees the string); commit
 * fsyncs its contents and renames it into place, replacing an existing DIR; on failure the
 * staging directory is removed. */
char *as_atomic_dir_begin(const char *dir);
int as_atomic_dir_commit(const char *tmp_dir, const char *dir);
void as_atomic_dir_abort(const char *tmp_dir);

#endif
