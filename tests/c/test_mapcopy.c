/* test_mapcopy.c - the POSIX source's view (io.c's posix_map) and
 * mapcopy.c's SIGBUS recovery: the view holds the file's bytes; a copy of
 * a page the file lost to a truncation returns -EFAULT instead of killing
 * the process, again and again (the handler stays armed), while copies of
 * pages that still exist succeed; a SIGBUS outside any protected copy
 * still ends the process (checked in a child). */
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "io.h"
#include "mapcopy.h"

#define PAGE 4096

typedef struct copy_job {
    unsigned char *dst;
    const unsigned char *src;
    size_t n;
} copy_job;

static void do_copy(void *arg) {
    copy_job *j = arg;
    memcpy(j->dst, j->src, j->n);
}

static void test_view_and_truncation(void) {
    const char *path = check_path("mapped.bin");
    unsigned char data[3 * PAGE];
    check_write_pattern(path, sizeof data, 7, 1, data);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    ml_source *s;
    CHECK_RC(ml_source_posix_adopt(fd, &s));
    ml_source_view v;
    CHECK_RC(ml_source_map(s, &v));
    CHECK_EQ(v.len, sizeof data);
    CHECK_MEM_EQ(v.base, data, sizeof data);
    ml_source_view again;
    CHECK_RC(ml_source_map(s, &again)); /* made once */
    CHECK(again.base == v.base);
    /* Cut the file to one page: the other two fault, the first does not. */
    CHECK_EQ(truncate(path, PAGE), 0);
    unsigned char out[PAGE];
    for (int round = 0; round < 3; round++) {
        copy_job lost = {out, v.base + 2 * PAGE, PAGE};
        CHECK_EQ(ml_map_protect(do_copy, &lost), -EFAULT);
        copy_job kept = {out, v.base, PAGE};
        CHECK_RC(ml_map_protect(do_copy, &kept));
        CHECK_MEM_EQ(out, data, PAGE);
    }
    ml_source_unref(s);
}

/* Outside ml_map_protect a bus error is not ours: the process dies of it. */
static void test_foreign_sigbus_kills(void) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsigned char out[4];
        copy_job j = {out, (const unsigned char *)"abcd", 4};
        ml_map_protect(do_copy, &j); /* installs the handler */
        raise(SIGBUS);
        _exit(0); /* not reached */
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    /* Killed by SIGBUS -- or, under a sanitizer, whose handler ours passed
     * it to, reported and exited with an error: never carried on. */
    CHECK(WIFSIGNALED(status) ? WTERMSIG(status) == SIGBUS : WEXITSTATUS(status) != 0);
}

int main(void) {
    check_tmpdir();
    test_view_and_truncation();
    test_foreign_sigbus_kills();
    CHECK_DONE();
}
