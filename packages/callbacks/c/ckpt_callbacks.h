/* ckpt_callbacks.h: checkpoint callbacks for programs that ckpt checkpoints (C, and through the
 * shared library libckpt_callbacks.so, Fortran or Python's ctypes).
 *
 *   static void prepare(struct ckpt_request *r, void *arg) {
 *     fflush(log);                              // what must be on disk before the checkpoint
 *     ckpt_exclude(r, cache, cache_len);        // memory the image need not hold (back zeroed)
 *     ckpt_take_over(r, mpi_fd);                // an fd this program re-establishes itself
 *     if (busy) ckpt_veto(r, "in the middle of a transaction");
 *   }
 *   static void resume(int event, const char *detail, void *arg) {
 *     if (event == CKPT_RESTART) reconnect();   // CKPT_CONTINUE, CKPT_FAILED: carry on
 *   }
 *   ckpt_callbacks_register(prepare, resume, NULL);
 *
 * The library starts one thread, which listens on a unix socket (an abstract name starting with
 * "ckpt-callbacks/", which is how ckpt finds the process) and calls `prepare` when ckpt is about
 * to checkpoint the process, then `resume` once the checkpoint is done (CKPT_CONTINUE), was not
 * made (CKPT_FAILED), or when the process was restored from it (CKPT_RESTART). While `prepare`
 * runs, and until `resume` is called, the process is not frozen: the other threads run on (hold
 * a lock in `prepare` and release it in `resume` to keep them still). Only ckpt running as root
 * or as this user is listened to. See PROTOCOL.md for the wire protocol. */
#ifndef CKPT_CALLBACKS_H
#define CKPT_CALLBACKS_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The events `resume` gets. */
enum { CKPT_CONTINUE = 1, CKPT_RESTART = 2, CKPT_FAILED = 3 };

/* A checkpoint being prepared (valid during `prepare` only). */
struct ckpt_request;

typedef void (*ckpt_prepare_fn)(struct ckpt_request *r, void *arg);
/* detail: for CKPT_FAILED, why (may be empty); else "". */
typedef void (*ckpt_resume_fn)(int event, const char *detail, void *arg);

/* Starts the callback thread. 0, or -errno (-EALREADY: registered already). */
int ckpt_callbacks_register(ckpt_prepare_fn prepare, ckpt_resume_fn resume, void *arg);

/* Memory the image need not hold: [addr, addr+len), page-aligned, private; it comes back zeroed
 * after a restart. 0 or -errno. */
int ckpt_exclude(struct ckpt_request *r, const void *addr, size_t len);
/* An fd this process re-establishes itself after a restart: the image holds /dev/null at its
 * number, which `resume` (CKPT_RESTART) replaces (dup2). 0 or -errno. */
int ckpt_take_over(struct ckpt_request *r, int fd);
/* Needs more time: the checkpoint waits ms more for `prepare` to return (bounded by ckpt). */
int ckpt_delay(struct ckpt_request *r, unsigned ms);
/* Refuses this checkpoint (it fails, naming the reason); `resume` is not called for it. */
int ckpt_veto(struct ckpt_request *r, const char *reason);
/* Whether the process is killed once the checkpoint is made (a dump without --leave-running). */
int ckpt_will_exit(const struct ckpt_request *r);

/* The abstract socket name the thread listens on (without its leading NUL), or NULL. */
const char *ckpt_callbacks_name(void);

#ifdef __cplusplus
}
#endif
#endif
