/* ref_policy: which files a by-reference stream payload may point into (docs/security.md).
 *
 * A stream comes from outside the process; without a policy a record naming /etc/shadow or
 * ~/.ssh/id_rsa with "kind":"ref" would make a consumer read that file and copy it into its
 * output. A reference is allowed when its file, resolved with realpath() (so "..", "//" and
 * symlinks count where they lead), lies under an allowed root:
 *   (a) explicit roots: the directories in env AS_REF_ROOT (colon-separated) and those a tool
 *       adds with as_ref_root_add() (its --ref-root options);
 *   (b) the directory of every checkpoint this process opened itself (as_ckpt_open registers it);
 *   (c) scratch roots for arenas: $TMPDIR, /tmp and /dev/shm, where the file must also be owned
 *       by the effective user (those directories are shared with other users);
 * or, outside every root, when the file is a valid safetensors file and the reference covers
 * exactly the data of one of its tensors (what `as-cat MODEL | tool` sends), so that no byte
 * other than a checkpoint tensor can be reached. AS_REF_STRICT=1 turns this last rule off. */
#ifndef AS_REF_POLICY_H
#define AS_REF_POLICY_H

#include <stdint.h>

/* Allow references under dir (resolved now; must exist). -1 with as_fail() otherwise. */
int as_ref_root_add(const char *dir);
/* Check a reference to bytes [offset, offset + nbytes) of `file`. 0 with *resolved set to the
 * malloc'ed real path to map (the caller frees it), or -1 with as_fail("reference to F is outside
 * the allowed roots (R1, R2, ...)") or another one-line reason. */
int as_stream_ref_allowed(const char *file, uint64_t offset, uint64_t nbytes, char **resolved);
/* The roots in force, ':'-separated (for messages and tests); owned by the module. */
const char *as_ref_roots(void);

#endif
