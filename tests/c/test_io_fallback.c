/* test_io_fallback.c - where io_uring cannot be set up (a seccomp profile
 * that blocks io_uring_setup, as container runtimes install), ML_IO_AUTO
 * falls back to pread by itself and reads the same bytes, and an explicit
 * ML_IO_URING request degrades to pread instead of failing.
 *
 * The test installs such a seccomp filter on itself (io_uring_setup
 * returns EPERM), so it needs no special machine. */
#include "check.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "io.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif

static void block_io_uring(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        SKIP("cannot install a seccomp filter here: %s", strerror(errno));
}

int main(void) {
    unsetenv("MULTILOAD_IO");
    check_tmpdir();
    const char *path = check_path("data.bin");
    unsigned char data[3 * 4096 + 17];
    check_write_pattern(path, sizeof data, 7, 3, data);

    block_io_uring();
    CHECK_EQ(ml_io_default_mode(), ML_IO_PREAD);

    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    ml_source *src = NULL;
    CHECK_RC(ml_source_posix_adopt(fd, &src));
    ml_io_mode modes[] = {ML_IO_AUTO, ML_IO_URING};
    for (size_t m = 0; m < 2; m++) {
        ml_io *io = NULL;
        CHECK_RC(ml_io_open(&io, src, 8, modes[m]));
        CHECK_EQ(ml_io_get_mode(io), ML_IO_PREAD);
        unsigned char a[5000], b[17];
        ml_io_req reqs[2] = {
            {.offset = 3, .len = sizeof a, .buf = a},
            {.offset = 3 * 4096, .len = sizeof b, .buf = b},
        };
        CHECK_RC(ml_io_read(io, reqs, 2));
        CHECK_MEM_EQ(a, data + 3, sizeof a);
        CHECK_MEM_EQ(b, data + 3 * 4096, sizeof b);
        ml_io_close(io);
    }
    ml_source_unref(src); /* closes fd */
    printf("io_uring blocked by seccomp: pread fallback chosen and exact\n");
    CHECK_DONE();
}
