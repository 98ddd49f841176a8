/* native.c: spawn a child in one C call (clone3 + async-signal-safe setup + execve), signalfd, subreaper.
 *
 * Must not: allocate, lock, call into Python or use any non async-signal-safe function between the clone
 * and the execve.  The child is a copy (or, on the vfork path, a borrower) of a possibly multi-threaded
 * process: any lock another thread held at clone time stays locked forever in the child (malloc, stdio,
 * glibc's thread list, the GIL).  So the child runs raw system calls only (cl_sys below): no glibc
 * function, no errno.
 *
 * Three paths (req->mode), all ending in the same child_exec():
 *   vfork  (0, default on x86_64; built but opt-in on aarch64 until run there, see cl_has_vfork_path)
 *          clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD [| CLONE_INTO_CGROUP]) on a stack mmap()ed here.
 *          The child borrows the parent's address space, so no page table is copied (the fork paths'
 *          cost, which grows with the parent: ~2x posix_spawn for a 14 MB Python, ~30x for 512 MB),
 *          and the calling thread
 *          sleeps until the child execs or exits (vfork(2): "the calling thread is suspended until the
 *          child terminates ... or it makes a call to execve(2)").  Failures come back through a struct
 *          in the parent's stack frame that the child writes before exiting: no pipe.  A raw clone3 with
 *          a new stack returns in the child on that stack, where no C frame exists to return to, so the
 *          syscall and the child's first instructions are one inline-assembly block (cl_clone3_vm) that
 *          calls child_entry() and exit_group()s if it ever returns.
 *   fork   (1) clone3(CLONE_PIDFD [| CLONE_INTO_CGROUP]) with fork semantics (no CLONE_VM): the child
 *          runs on a copy of our stack, so it can simply continue in C.  Failures come back over a
 *          CLOEXEC pipe: EOF means execve succeeded, an 8-byte {stage, errno} report means a step failed.
 *   legacy (2) fork() + pidfd_open() in the parent, pipe reports as above.  Taken when clone3 is missing
 *          (ENOSYS: kernel < 5.3, or a seccomp profile that refuses it) or when asked for.
 *          CLONE_INTO_CGROUP is then emulated by the child writing "0" to openat(cgroup_fd,
 *          "cgroup.procs").  The pidfd_open after fork is safe because nothing else reaps our child
 *          before we read the error pipe unless another thread calls waitpid(-1) concurrently.
 *
 * Child steps: reset every signal disposition to SIG_DFL (ignored signals survive execve: Python ignores
 * SIGPIPE and SIGXFSZ; and on the vfork path no handler of the parent may ever run on the child's stack),
 * empty the mask, setsid, v1 cgroup.procs writes, fd map, close the rest, setgroups/setgid/setuid,
 * setrlimit, umask, chdir, execve.
 *
 * What the vfork child shares with its parent, and why each step below is still private (clone(2)):
 *   memory (CLONE_VM): yes.  It reads only *req, its context and the strings and arrays they point to
 *          (kept alive by the Python caller for the whole call), writes only its own stack and the
 *          report struct, and calls no glibc function, so it takes no lock and touches no TLS-cached
 *          state.  It still runs with the parent thread's TLS (no CLONE_SETTLS): the stack protector
 *          reads its canary from there, which is harmless, and errno would land there, which is why
 *          the raw syscalls return -errno instead.  Where x86 user shadow stacks are on, the kernel
 *          gives a CLONE_VFORK child the parent's shadow stack; the child's one call pushes below the
 *          parent's shadow stack pointer, which the parent never reads back.
 *   signal handlers: no.  "If CLONE_SIGHAND is not set, the child process inherits a copy of the signal
 *          handlers of the calling process at the time of the clone call.  Calls to sigaction(2)
 *          performed later by one of the processes have no effect on the other process."  So resetting
 *          dispositions in the child leaves the parent's handlers alone.
 *   signal mask: per thread, inherited; the parent blocks EVERY signal around the clone with a raw
 *          rt_sigprocmask (glibc's pthread_sigmask silently keeps its own SIGCANCEL/SIGSETXID
 *          unblocked, and their handlers touch the calling thread's TLS), so no handler can run in the
 *          child before its dispositions are SIG_DFL.
 *   file descriptors: no.  "If CLONE_FILES is not set, the child process inherits a copy of all file
 *          descriptors opened in the calling process at the time of the call": dup2/close are private.
 *   cwd, umask: no.  "If CLONE_FS is not set, the child process works on a copy of the filesystem
 *          information of the calling process at the time of the call".
 *   credentials, rlimits, session: per process; the child is a new process (no CLONE_THREAD).  The
 *          set*id calls are raw: glibc's wrappers would broadcast the change to every thread of the
 *          parent (its "setxid" signal dance).
 *   other threads of the parent: NOT suspended (CLONE_VFORK stops only the calling thread).  They never
 *          see the child's stack, and the child never writes anything they read.
 *   exit: exit_group() in the child ends only the child: it is its own thread group (no CLONE_THREAD).
 *          Its exit or execve releases the parent (vfork(2)); the parent's wait is killable only, so it
 *          cannot return early while the child still runs on the borrowed memory.
 * Concurrency: the GIL is released during cl_spawn.  Another thread forking meanwhile inherits our error
 * pipe's write end (CLOEXEC), so a pipe-path read only ends once that child has exec'd or exited as well.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
/* 32-bit ABIs kept 16-bit ids on the old numbers; the *32 calls take full gid_t/uid_t (x86_64 has none). */
#ifdef SYS_setgroups32
#define CL_SYS_SETGROUPS SYS_setgroups32
#define CL_SYS_SETGID SYS_setgid32
#define CL_SYS_SETUID SYS_setuid32
#else
#define CL_SYS_SETGROUPS SYS_setgroups
#define CL_SYS_SETGID SYS_setgid
#define CL_SYS_SETUID SYS_setuid
#endif
/* 32-bit ABIs name it fcntl64; the commands used here (F_DUPFD_CLOEXEC) are the same. */
#ifdef SYS_fcntl64
#define CL_SYS_FCNTL SYS_fcntl64
#else
#define CL_SYS_FCNTL SYS_fcntl
#endif
/* The kernel's sigset_t is _NSIG bits: 64 everywhere but MIPS (128).  glibc's is 1024 bits. */
#ifdef __mips__
#define CL_KSIGSET_BYTES 16
#else
#define CL_KSIGSET_BYTES 8
#endif
#define CL_KSIGSET_WORDS (CL_KSIGSET_BYTES / sizeof(unsigned long))
#define CL_KNSIG (CL_KSIGSET_BYTES * 8)

enum { CL_MODE_VFORK = 0, CL_MODE_FORK = 1, CL_MODE_LEGACY = 2 };

/* The vfork child's stack: it runs child_exec() (about 1.2 KiB of locals) and raw syscalls, nothing
   else, so 64 KiB is ample; one PROT_NONE guard page below turns an overflow into SIGSEGV of the child
   (which the parent then reaps) instead of a silent write into whatever is mapped under it. */
#define CL_CHILD_STACK (64 * 1024)

/* ---- raw system calls -------------------------------------------------------------------------------
 * cl_sys(n, ...) returns the kernel's value: >= 0, or -errno.  It never touches errno (TLS shared with
 * the parent thread on the vfork path) and goes through no PLT.  Unused trailing arguments are 0, which
 * the kernel ignores.  Elsewhere it is glibc's syscall() (only used by the fork paths there). */
#if defined(__x86_64__)
#define CL_HAVE_VFORK_PATH 1
static inline long cl_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    /* The syscall instruction clobbers rcx (return rip) and r11 (rflags). */
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define CL_HAVE_VFORK_PATH 1
static inline long cl_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    /* svc preserves every register but x0 (the result). */
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#define CL_HAVE_VFORK_PATH 0
static long cl_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#endif

#define CL_A(x) ((long)(x))
#define cl_sys0(n) cl_sys6((n), 0, 0, 0, 0, 0, 0)
#define cl_sys1(n, a) cl_sys6((n), CL_A(a), 0, 0, 0, 0, 0)
#define cl_sys2(n, a, b) cl_sys6((n), CL_A(a), CL_A(b), 0, 0, 0, 0)
#define cl_sys3(n, a, b, c) cl_sys6((n), CL_A(a), CL_A(b), CL_A(c), 0, 0, 0)
#define cl_sys4(n, a, b, c, d) cl_sys6((n), CL_A(a), CL_A(b), CL_A(c), CL_A(d), 0, 0)

/* Stage numbers travel over the error pipe or the shared report; names are what Python shows. */
enum {
    CL_STAGE_NONE = 0,
    CL_STAGE_PIPE,
    CL_STAGE_CLONE,
    CL_STAGE_PIDFD_OPEN,
    CL_STAGE_SIGPROCMASK,
    CL_STAGE_SETSID,
    CL_STAGE_CGROUP_V1,
    CL_STAGE_CGROUP,
    CL_STAGE_DUP2,
    CL_STAGE_CLOSE,
    CL_STAGE_SETGROUPS,
    CL_STAGE_SETGID,
    CL_STAGE_SETUID,
    CL_STAGE_SETRLIMIT,
    CL_STAGE_CHDIR,
    CL_STAGE_EXECVE,
    CL_STAGE_READ,
    CL_STAGE_STACK,
    CL_STAGE_COUNT
};

static const char *const stage_names[CL_STAGE_COUNT] = {
    "none", "pipe", "clone", "pidfd_open", "sigprocmask", "setsid", "cgroup_v1", "cgroup",
    "dup2", "close", "setgroups", "setgid", "setuid", "setrlimit", "chdir", "execve", "read",
    "stack",
};

const char *cl_stage_name(int stage)
{
    if (stage < 0 || stage >= CL_STAGE_COUNT)
        return "unknown";
    return stage_names[stage];
}

struct report {
    int stage;
    int err;
};

/* What the child needs besides the request: where to report.  On the vfork path it lives in the
   parent's (suspended) stack frame and the child reads it through the shared address space. */
struct child_ctx {
    const struct cl_spawn_req *req;
    int errfd;                   /* pipe write end (fork paths), -1 on the vfork path */
    volatile struct report *shared; /* the parent's report struct (vfork path), NULL otherwise */
    int emulate_cgroup;          /* legacy path: write "0" to <cgroup_fd>/cgroup.procs ourselves */
};

/* Child side: report (stage, errno) and die.  A pipe write of <= PIPE_BUF bytes is atomic; on the vfork
   path the parent reads the struct only after our exit released it, so plain stores suffice. */
static void __attribute__((noreturn)) child_fail(const struct child_ctx *ctx, int errfd, int stage, long neg)
{
    if (ctx->shared != NULL) {
        ctx->shared->err = (int)-neg;
        ctx->shared->stage = stage;
    } else {
        struct report r;
        long n;
        r.stage = stage;
        r.err = (int)-neg;
        do {
            n = cl_sys3(SYS_write, errfd, &r, sizeof(r));
        } while (n == -EINTR);
    }
    for (;;)
        cl_sys1(SYS_exit_group, 127);
}

static long write_zero(int fd)
{
    long n;
    do {
        n = cl_sys3(SYS_write, fd, "0", 1);
    } while (n == -EINTR);
    return n == 1 ? 0 : (n < 0 ? n : -EIO);
}

/* Close lo..hi inclusive (hi = ~0U: to the end).  close_range(2) since 5.9; without it, a brute-force
   loop up to RLIMIT_NOFILE (the only async-signal-safe option: reading /proc/self/fd needs opendir,
   which mallocs). */
static void close_from(unsigned int lo, unsigned int hi)
{
    unsigned long long rl[2]; /* prlimit64's struct: {cur, max} as u64 on every architecture */
    unsigned long fd, max = 65536;
    if (lo > hi)
        return;
    if (cl_sys3(SYS_close_range, lo, hi, 0) == 0)
        return;
    if (cl_sys4(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, rl) == 0 && rl[0] != ~0ULL && rl[0] < max)
        max = (unsigned long)rl[0];
    if (hi != ~0U && (unsigned long)hi < max)
        max = (unsigned long)hi + 1;
    for (fd = lo; fd < max; fd++)
        cl_sys1(SYS_close, fd);
}

/* Everything the child does between clone and execve.  Never returns. */
static void __attribute__((noreturn)) child_exec(const struct child_ctx *ctx)
{
    const struct cl_spawn_req *req = ctx->req;
    /* A zeroed kernel struct sigaction is SIG_DFL with no flags and an empty mask, whatever the
       architecture's field order (handler, flags[, restorer], mask); 8 words cover every layout. */
    unsigned long dfl[8] = {0};
    unsigned long empty[CL_KSIGSET_WORDS] = {0};
    int errfd = ctx->errfd, sig, i, j, maxtarget = -1;
    long r;

    /* Dispositions first, mask second: once unblocked, only SIG_DFL can act on a pending signal.  Raw
       rt_sigaction also resets glibc's reserved 32/33 (the kernel refuses only SIGKILL and SIGSTOP). */
    for (sig = 1; sig <= (int)CL_KNSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        (void)cl_sys4(SYS_rt_sigaction, sig, dfl, NULL, CL_KSIGSET_BYTES);
    }
    r = cl_sys4(SYS_rt_sigprocmask, SIG_SETMASK, empty, NULL, CL_KSIGSET_BYTES);
    if (r < 0)
        child_fail(ctx, errfd, CL_STAGE_SIGPROCMASK, r);

    if (req->new_session && (r = cl_sys0(SYS_setsid)) < 0)
        child_fail(ctx, errfd, CL_STAGE_SETSID, r);

    /* Cgroup placement before the fd map: dup2 may overwrite the cgroup fds. */
    if (ctx->emulate_cgroup && req->cgroup_fd >= 0) {
        long procs = cl_sys4(SYS_openat, req->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC, 0);
        if (procs < 0)
            child_fail(ctx, errfd, CL_STAGE_CGROUP, procs);
        if ((r = write_zero((int)procs)) < 0)
            child_fail(ctx, errfd, CL_STAGE_CGROUP, r);
        cl_sys1(SYS_close, procs);
    }
    for (i = 0; i < req->ncgroup_procs; i++)
        if ((r = write_zero(req->cgroup_procs_fds[i])) < 0)
            child_fail(ctx, errfd, CL_STAGE_CGROUP_V1, r);

    /* fd map.  Move the error pipe and every source that could collide with a target above the highest
       target (as CLOEXEC copies), so the dup loop never clobbers an fd it still needs; afterwards every
       source differs from its target, so dup3 (the only dup2 aarch64 has) never sees old == new, and a
       target mapped to itself loses its CLOEXEC flag as a mapped fd must. */
    for (i = 0; i < req->nfds; i++)
        if (req->fd_targets[i] > maxtarget)
            maxtarget = req->fd_targets[i];
    if (errfd >= 0 && errfd <= maxtarget) {
        r = cl_sys3(CL_SYS_FCNTL, errfd, F_DUPFD_CLOEXEC, maxtarget + 1);
        if (r < 0)
            child_fail(ctx, errfd, CL_STAGE_DUP2, r);
        errfd = (int)r;
    }
    {
        /* Stack copy of the sources: fd maps are small; a larger one is refused by the wrapper. */
        int src[256];
        if (req->nfds > 256)
            child_fail(ctx, errfd, CL_STAGE_DUP2, -EINVAL);
        for (i = 0; i < req->nfds; i++) {
            src[i] = req->fd_sources[i];
            if (src[i] <= maxtarget) {
                r = cl_sys3(CL_SYS_FCNTL, src[i], F_DUPFD_CLOEXEC, maxtarget + 1);
                if (r < 0)
                    child_fail(ctx, errfd, CL_STAGE_DUP2, r);
                src[i] = (int)r;
            }
        }
        for (i = 0; i < req->nfds; i++)
            if ((r = cl_sys3(SYS_dup3, src[i], req->fd_targets[i], 0)) < 0)
                child_fail(ctx, errfd, CL_STAGE_DUP2, r);
    }

    /* Close everything else; the error pipe (if any) stays open until execve closes it (CLOEXEC). */
    for (i = 0; i <= maxtarget; i++) {
        int keep = 0;
        for (j = 0; j < req->nfds; j++)
            if (req->fd_targets[j] == i)
                keep = 1;
        if (!keep)
            cl_sys1(SYS_close, i);
    }
    if (errfd >= 0) {
        if (errfd > maxtarget + 1)
            close_from((unsigned int)(maxtarget + 1), (unsigned int)(errfd - 1));
        close_from((unsigned int)errfd + 1, ~0U);
    } else {
        close_from((unsigned int)(maxtarget + 1), ~0U);
    }

    /* Raw syscalls, not glibc's wrappers: glibc broadcasts set*id to every thread it knows of (the
       "setxid" dance), and in this child its thread list still describes the parent's threads. */
    if (req->ngroups >= 0 && (r = cl_sys2(CL_SYS_SETGROUPS, req->ngroups, req->groups)) < 0)
        child_fail(ctx, errfd, CL_STAGE_SETGROUPS, r);
    if (req->gid >= 0 && (r = cl_sys1(CL_SYS_SETGID, (gid_t)req->gid)) < 0)
        child_fail(ctx, errfd, CL_STAGE_SETGID, r);
    if (req->uid >= 0 && (r = cl_sys1(CL_SYS_SETUID, (uid_t)req->uid)) < 0)
        child_fail(ctx, errfd, CL_STAGE_SETUID, r);

    for (i = 0; i < req->nrlimits; i++) {
        /* prlimit64's struct (what glibc's setrlimit uses too). */
        unsigned long long lim[2];
        lim[0] = req->rlimit_soft[i];
        lim[1] = req->rlimit_hard[i];
        if ((r = cl_sys4(SYS_prlimit64, 0, req->rlimit_resources[i], lim, NULL)) < 0)
            child_fail(ctx, errfd, CL_STAGE_SETRLIMIT, r);
    }
    if (req->umask >= 0)
        cl_sys1(SYS_umask, req->umask);
    if (req->cwd != NULL && (r = cl_sys1(SYS_chdir, req->cwd)) < 0)
        child_fail(ctx, errfd, CL_STAGE_CHDIR, r);

    r = cl_sys3(SYS_execve, req->path, req->argv, req->envp);
    child_fail(ctx, errfd, CL_STAGE_EXECVE, r);
}

int cl_probe_clone3(void)
{
    /* A zero-sized clone_args is refused with EINVAL by a kernel that has clone3, ENOSYS otherwise. */
    return cl_sys2(SYS_clone3, NULL, 0) != -ENOSYS;
}

/* 2: the vfork path is built and has been run by the test suite on this architecture (x86_64), so it is
   the default; 1: built but never executed by us (aarch64: no hardware to run it on, and qemu-user has
   no clone3), so only an explicit mode="vfork" takes it; 0: not built. */
int cl_has_vfork_path(void)
{
#if defined(__x86_64__)
    return 2;
#else
    return CL_HAVE_VFORK_PATH;
#endif
}

/* Block every signal of the calling thread, glibc's reserved ones included (see the header comment). */
static void block_all(unsigned long *old)
{
    unsigned long all[CL_KSIGSET_WORDS];
    size_t i;
    for (i = 0; i < CL_KSIGSET_WORDS; i++)
        all[i] = ~0UL;
    (void)cl_sys4(SYS_rt_sigprocmask, SIG_SETMASK, all, old, CL_KSIGSET_BYTES);
}

static void restore_mask(const unsigned long *old)
{
    (void)cl_sys4(SYS_rt_sigprocmask, SIG_SETMASK, old, NULL, CL_KSIGSET_BYTES);
}

static void clone_args_init(struct clone_args *args, const struct cl_spawn_req *req, int *pidfd)
{
    memset(args, 0, sizeof(*args));
    args->flags = CLONE_PIDFD;
    args->pidfd = (uint64_t)(uintptr_t)pidfd;
    args->exit_signal = SIGCHLD;
    if (req->cgroup_fd >= 0) {
        args->flags |= CLONE_INTO_CGROUP;
        args->cgroup = (uint64_t)req->cgroup_fd;
    }
}

#if CL_HAVE_VFORK_PATH
static int child_entry(void *arg)
{
    child_exec((const struct child_ctx *)arg);
}

/* clone3 whose child starts on args->stack: returns the pid or -errno in the parent, never in the child.
 *
 * The kernel gives the child a copy of the caller's registers except the result (0) and the stack
 * pointer (stack + stack_size).  fn and arg ride in callee-saved registers, which the syscall preserves
 * and the child inherits.  The child clears the frame pointer (end of the backtrace), keeps the stack
 * 16-byte aligned at the call as both ABIs require, calls fn(arg), and exit_group()s with its result if
 * it ever returns: there is no C frame on this stack to return into.  Nothing after the syscall in the
 * child may use the parent's stack: the parent's frame is still live (it is only suspended). */
static long cl_clone3_vm(struct clone_args *args, int (*fn)(void *), void *arg)
{
#if defined(__x86_64__)
    long ret;
    register void *r12 __asm__("r12") = (void *)fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     /* child, on its own stack */
                     "xorl %%ebp, %%ebp\n\t"
                     "andq $-16, %%rsp\n\t"
                     "movq %%r13, %%rdi\n\t"
                     "callq *%%r12\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl %[exit_nr], %%eax\n\t"
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "0"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), "r"(r12), "r"(r13),
                       [exit_nr] "i"(SYS_exit_group)
                     : "rcx", "r11", "memory", "cc");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_clone3;
    register long x0 __asm__("x0") = (long)args;
    register long x1 __asm__("x1") = (long)sizeof(*args);
    register void *x19 __asm__("x19") = (void *)fn;
    register void *x20 __asm__("x20") = arg;
    /* The new sp is stack + stack_size, page aligned by cl_spawn, so already 16-byte aligned. */
    __asm__ volatile("svc #0\n\t"
                     "cbnz x0, 1f\n\t"
                     /* child, on its own stack */
                     "mov x29, xzr\n\t"
                     "mov x30, xzr\n\t"
                     "mov x0, x20\n\t"
                     "blr x19\n\t"
                     "mov x8, %[exit_nr]\n\t"
                     "svc #0\n\t"
                     "brk #0x3e8\n\t"
                     "1:\n\t"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x19), "r"(x20), [exit_nr] "i"(SYS_exit_group)
                     : "memory", "cc");
    return x0;
#endif
}

/* The vfork path.  Returns 1 when it ran (res filled in, result in *rc), 0 when clone3 is missing and
   the caller should take the legacy path instead. */
static int spawn_vfork(const struct cl_spawn_req *req, struct cl_spawn_result *res, int *rc)
{
    struct clone_args args;
    struct child_ctx ctx;
    volatile struct report rep;
    unsigned long old[CL_KSIGSET_WORDS];
    long page = sysconf(_SC_PAGESIZE), pid;
    size_t total;
    char *stack;
    int pidfd = -1;

    if (page <= 0)
        page = 4096;
    total = CL_CHILD_STACK + (size_t)page;
    stack = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED || mprotect(stack, (size_t)page, PROT_NONE) < 0) {
        res->stage = CL_STAGE_STACK;
        res->err = errno;
        if (stack != MAP_FAILED)
            munmap(stack, total);
        *rc = -1;
        return 1;
    }

    rep.stage = CL_STAGE_NONE;
    rep.err = 0;
    ctx.req = req;
    ctx.errfd = -1;
    ctx.shared = &rep;
    ctx.emulate_cgroup = 0;
    clone_args_init(&args, req, &pidfd);
    /* CLONE_VM: share the address space, so nothing is copied; CLONE_VFORK: sleep until the child
       execs or exits, which is what makes borrowing our memory (and this stack frame) safe. */
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = (uint64_t)total;

    block_all(old);
    pid = cl_clone3_vm(&args, child_entry, &ctx);
    restore_mask(old);
    /* The child has exec'd (into a new mm) or exited: the stack is ours again. */
    munmap(stack, total);

    if (pid == -ENOSYS)
        return 0;
    res->used_clone3 = 1;
    res->used_mode = CL_MODE_VFORK;
    if (pid < 0) {
        res->stage = CL_STAGE_CLONE;
        res->err = (int)-pid;
        *rc = -1;
        return 1;
    }
    res->pid = (int)pid;
    if (rep.stage == CL_STAGE_NONE) {
        res->pidfd = pidfd;
        *rc = 0;
        return 1;
    }
    {
        siginfo_t info;
        while (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED) < 0 && errno == EINTR)
            ;
    }
    close(pidfd);
    res->stage = rep.stage;
    res->err = rep.err;
    *rc = -1;
    return 1;
}
#endif

/* The fork and legacy paths: the child runs on a copy of this stack and reports over a pipe. */
static int spawn_forked(const struct cl_spawn_req *req, struct cl_spawn_result *res, int use_clone3)
{
    int pipefd[2], pidfd = -1, saved;
    long pid = -ENOSYS;
    unsigned long old[CL_KSIGSET_WORDS];
    struct report rep;
    struct child_ctx ctx;
    size_t got = 0;

    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        res->stage = CL_STAGE_PIPE;
        res->err = errno;
        return -1;
    }
    ctx.req = req;
    ctx.errfd = pipefd[1];
    ctx.shared = NULL;

    block_all(old);
    if (use_clone3) {
        struct clone_args args;
        clone_args_init(&args, req, &pidfd);
        pid = cl_sys2(SYS_clone3, &args, sizeof(args));
        if (pid == 0) {
            ctx.emulate_cgroup = 0;
            child_exec(&ctx);
        }
        if (pid != -ENOSYS) {
            res->used_clone3 = 1;
            res->used_mode = CL_MODE_FORK;
        }
    }
    if (pid == -ENOSYS) {
        pid = fork();
        if (pid == 0) {
            ctx.emulate_cgroup = 1;
            child_exec(&ctx);
        }
        if (pid < 0)
            pid = -errno;
        res->used_clone3 = 0;
        res->used_mode = CL_MODE_LEGACY;
    }
    restore_mask(old);
    close(pipefd[1]);

    if (pid < 0) {
        close(pipefd[0]);
        res->stage = CL_STAGE_CLONE;
        res->err = (int)-pid;
        return -1;
    }
    res->pid = (int)pid;
    if (pidfd < 0) {
        pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
        if (pidfd < 0) {
            /* No pidfd, no way to supervise it: do not leave it running. */
            saved = errno;
            kill((pid_t)pid, SIGKILL);
            while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
                ;
            close(pipefd[0]);
            res->stage = CL_STAGE_PIDFD_OPEN;
            res->err = saved;
            return -1;
        }
        /* pidfd_open's fd is already CLOEXEC; CLONE_PIDFD's is too. */
    }

    while (got < sizeof(rep)) {
        ssize_t n = read(pipefd[0], (char *)&rep + got, sizeof(rep) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            /* Cannot tell whether execve succeeded: treat as failure and kill it. */
            rep.stage = CL_STAGE_READ;
            rep.err = errno;
            kill((pid_t)pid, SIGKILL);
            got = sizeof(rep);
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(pipefd[0]);

    if (got == 0) {
        res->pidfd = pidfd;
        return 0;
    }
    if (got < sizeof(rep)) { /* a torn report cannot happen with one small write; be defensive */
        rep.stage = CL_STAGE_READ;
        rep.err = EIO;
    }
    {
        siginfo_t info;
        while (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED) < 0 && errno == EINTR)
            ;
    }
    close(pidfd);
    res->stage = rep.stage;
    res->err = rep.err;
    return -1;
}

int cl_spawn(const struct cl_spawn_req *req, struct cl_spawn_result *res)
{
    int mode = req->mode;

    memset(res, 0, sizeof(*res));
    res->pid = -1;
    res->pidfd = -1;
    res->used_mode = CL_MODE_LEGACY;

#if CL_HAVE_VFORK_PATH
    if (mode == CL_MODE_VFORK) {
        int rc;
        if (spawn_vfork(req, res, &rc))
            return rc;
        mode = CL_MODE_LEGACY; /* no clone3 at all */
    }
#else
    if (mode == CL_MODE_VFORK)
        mode = CL_MODE_FORK;
#endif
    return spawn_forked(req, res, mode == CL_MODE_FORK);
}

int cl_signalfd(int fd, const int *sigs, int nsigs, int flags)
{
    sigset_t mask;
    int i, r;
    sigemptyset(&mask);
    for (i = 0; i < nsigs; i++)
        if (sigaddset(&mask, sigs[i]) < 0)
            return -errno;
    r = signalfd(fd, &mask, flags);
    return r < 0 ? -errno : r;
}

int cl_set_child_subreaper(int on)
{
    return prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)on, 0, 0, 0) < 0 ? -errno : 0;
}

int cl_get_child_subreaper(void)
{
    int v = 0;
    return prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&v, 0, 0, 0) < 0 ? -errno : v;
}

int cl_sfd_nonblock(void) { return SFD_NONBLOCK; }
int cl_sfd_cloexec(void) { return SFD_CLOEXEC; }

int cl_tune_malloc(int mmap_threshold, int trim_threshold)
{
#ifdef __GLIBC__
    /* mallopt() returns 1 on success, 0 on error (mallopt(3)). */
    if (mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1 || mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1)
        return -1;
    return 0;
#else
    (void)mmap_threshold;
    (void)trim_threshold;
    return -ENOSYS;
#endif
}

size_t cl_count_byte(const unsigned char *buf, size_t len, int c)
{
    /* bytes.count() compares one byte at a time (~2 GB/s here); this loop is vectorised (build_native.py
     * asks gcc for it): runs of 255 bytes keep a one-byte counter per lane, which cannot overflow. */
    const unsigned char target = (unsigned char)c;
    size_t total = 0;
    while (len > 0) {
        size_t run = len < 255 ? len : 255;
        unsigned char found = 0;
        for (size_t i = 0; i < run; i++)
            found += buf[i] == target;
        total += found;
        buf += run;
        len -= run;
    }
    return total;
}
