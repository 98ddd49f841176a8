/* native.h: the C half of circus_linux._native (spawn via clone3, signalfd, subreaper, a byte count).
 *
 * Only the block between CDEF-BEGIN and CDEF-END is read by build_native.py as the cffi cdef, so it must
 * stay plain declarations (no #include, no #if, no macros).  Everything is prefixed cl_ (circus-linux).
 */
#ifndef CIRCUS_LINUX_NATIVE_H
#define CIRCUS_LINUX_NATIVE_H

#include <stddef.h>

/* CDEF-BEGIN */
/* One spawn request.  Optional integers use -1 for "leave untouched". */
struct cl_spawn_req {
    const char *path;            /* absolute path given to execve */
    char **argv;                 /* NULL-terminated */
    char **envp;                 /* NULL-terminated */
    const char *cwd;             /* NULL: inherit */
    const int *fd_targets;       /* child fd numbers ... */
    const int *fd_sources;       /* ... and the parent fds that become them */
    int nfds;
    long long uid;               /* -1: untouched */
    long long gid;               /* -1: untouched */
    const unsigned int *groups;  /* setgroups() list */
    int ngroups;                 /* -1: untouched; 0: clear supplementary groups */
    int umask;                   /* -1: untouched */
    const int *rlimit_resources;
    const unsigned long long *rlimit_soft;
    const unsigned long long *rlimit_hard;
    int nrlimits;
    int cgroup_fd;               /* -1: none; else a cgroup2 dir fd (CLONE_INTO_CGROUP) */
    const int *cgroup_procs_fds; /* v1 cgroup.procs fds opened O_WRONLY: the child writes "0" to each */
    int ncgroup_procs;
    int new_session;
    int mode;                    /* 0 vfork: clone3(CLONE_VM|CLONE_VFORK) on a private stack (x86_64,
                                    aarch64; elsewhere it runs as 1); 1 fork: clone3 with fork semantics;
                                    2 legacy: fork()+pidfd_open().  0 and 1 fall back to 2 on ENOSYS. */
};

struct cl_spawn_result {
    int pid;
    int pidfd;
    int stage;                   /* CL_STAGE_* number of the step that failed; 0 on success */
    int err;                     /* errno of that step */
    int used_clone3;             /* 1 if the child came from clone3, 0 from the fork fallback */
    int used_mode;               /* the path that actually ran (0 vfork, 1 fork, 2 legacy) */
};

int cl_spawn(const struct cl_spawn_req *req, struct cl_spawn_result *res);
const char *cl_stage_name(int stage);
int cl_probe_clone3(void);
int cl_has_vfork_path(void);
int cl_signalfd(int fd, const int *sigs, int nsigs, int flags);
int cl_set_child_subreaper(int on);
int cl_get_child_subreaper(void);
int cl_sfd_nonblock(void);
int cl_sfd_cloexec(void);
/* glibc's mallopt(M_MMAP_THRESHOLD) then mallopt(M_TRIM_THRESHOLD): 0, -1 if glibc refused, -ENOSYS without
 * glibc. */
int cl_tune_malloc(int mmap_threshold, int trim_threshold);
/* How many bytes of buf[0..len) equal c. */
size_t cl_count_byte(const unsigned char *buf, size_t len, int c);
/* CDEF-END */

#endif
