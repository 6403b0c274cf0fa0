/* mutate_main.c - a plain mutation loop around LLVMFuzzerTestOneInput, for
 * machines without libFuzzer. No coverage feedback: it mutates the seed
 * corpus blindly with the mutations that matter to a binary format -
 * bit flips; bytes set to 0, 0xff, +1, -1 or random; 2-, 4- and 8-byte
 * little-endian fields set to boundary values (0, 1, all ones, the sign
 * bit, the image size and its neighbours, small powers of two) or nudged
 * by one; blocks copied within an input or spliced in from another; and
 * truncation - stacking 1..8 of them per input. An input that still
 * walks a B-tree cleanly (harness.h's outcome) joins a bounded pool of
 * parents, which stands in for coverage: the deeper a mutant gets, the
 * more its children reach.
 *
 * Crashes: the loop runs in a child process; the input being run lives
 * in memory shared with the parent, so whatever kills the child - an
 * ASan or UBSan report, the harness's abort() on a broken invariant, a
 * signal - the parent saves that input as crashes/crash-<hash> and
 * starts a new child for the time left. A child that makes no progress
 * for HANG_SECONDS is killed and its input saved as timeout-<hash>.
 * Every ten seconds, and at the end, it prints inputs/s and outcomes.
 *
 * Usage: mutate_main [-t seconds] [-s seed] [-o crashdir] [-r] corpus_dir_or_file...
 *   -r  replay: run each input once, in this process, and exit
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define INPUT_MAX (4u << 20) /* bytes: larger seeds are skipped, mutants cut */
#define POOL_MAX 4096        /* parents kept besides the seeds */
#define HANG_SECONDS 20
#define MAX_CRASHES 1000     /* stop saving (and running) after this many */

typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

/* Shared with the parent: counters and the input being run. */
typedef struct shared {
    volatile uint64_t execs;         /* inputs run by all children */
    volatile uint64_t locate_ok;     /* inputs whose locate returned 0 */
    volatile uint64_t walk_ok;       /* ... whose walk returned 0 */
    volatile uint64_t walk_chunks;   /* ... that emitted at least one chunk */
    volatile uint64_t kinds[8];      /* index kinds located */
    volatile size_t len;             /* bytes of cur in use */
    uint8_t cur[INPUT_MAX];
} shared;

static buf *seeds;
static size_t n_seeds;
static buf pool[POOL_MAX];
static size_t n_pool;
static uint64_t rng_state;

static uint64_t rnd(void) { /* xorshift64*: fast, and enough for choosing mutations */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void load(const char *path) {
    FILE *fp = fopen(path, "rb");
    struct stat st;
    if (!fp || fstat(fileno(fp), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)INPUT_MAX) {
        if (fp)
            fclose(fp);
        return;
    }
    buf b = {malloc((size_t)st.st_size + 1), (size_t)st.st_size};
    if (!b.p || fread(b.p, 1, b.n, fp) != b.n) {
        fprintf(stderr, "mutate_main: cannot read %s\n", path);
        exit(2);
    }
    fclose(fp);
    if (!(seeds = realloc(seeds, (n_seeds + 1) * sizeof *seeds)))
        exit(2);
    seeds[n_seeds++] = b;
}

static void load_path(const char *path) {
    DIR *dir = opendir(path);
    if (!dir) {
        load(path);
        return;
    }
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.')
            continue;
        char *p;
        if (asprintf(&p, "%s/%s", path, e->d_name) < 0)
            exit(2);
        load(p);
        free(p);
    }
    closedir(dir);
}

static void put_le(uint8_t *p, unsigned w, uint64_t v) {
    for (unsigned i = 0; i < w; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned w) {
    uint64_t v = 0;
    for (unsigned i = w; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* One mutation of d[0..*n) in place; the buffer holds INPUT_MAX bytes. */
static void mutate(uint8_t *d, size_t *n) {
    static const unsigned widths[] = {2, 4, 8};
    if (*n == 0)
        return;
    size_t at = below(*n);
    switch (below(10)) {
    case 0: /* flip a bit */
        d[at] ^= (uint8_t)(1u << below(8));
        break;
    case 1: { /* a byte to a boundary value */
        static const uint8_t v[] = {0, 0xff, 1, 0x7f, 0x80, 2, 0x40};
        d[at] = v[below(sizeof v)];
        break;
    }
    case 2: /* a byte one up or down */
        d[at] += below(2) ? 1 : 0xff;
        break;
    case 3: /* a random byte */
        d[at] = (uint8_t)rnd();
        break;
    case 4:
    case 5: { /* a little-endian field to a boundary value */
        unsigned w = widths[below(3)];
        if (*n < w)
            break;
        at = below(*n - w + 1);
        uint64_t all = w == 8 ? UINT64_MAX : (UINT64_C(1) << (8 * w)) - 1;
        uint64_t v[] = {0, 1, all, all - 1, all >> 1, (all >> 1) + 1, *n, *n - 1, *n + 1,
                        UINT64_C(1) << below(8 * w), 2, 4, 8, 16, 32, 64, 65, 4096};
        put_le(d + at, w, v[below(sizeof v / sizeof v[0])] & all);
        break;
    }
    case 6: { /* a little-endian field nudged by a small amount */
        unsigned w = widths[below(3)];
        if (*n < w)
            break;
        at = below(*n - w + 1);
        int64_t delta = (int64_t)below(33) - 16;
        put_le(d + at, w, get_le(d + at, w) + (uint64_t)delta);
        break;
    }
    case 7: { /* copy a block inside the input: duplicated keys, nodes, messages */
        size_t len = 1 + below(*n < 256 ? *n : 256), from = below(*n);
        if (from + len > *n)
            len = *n - from;
        if (at + len > *n)
            len = *n - at;
        memmove(d + at, d + from, len);
        break;
    }
    case 8: { /* splice: a block of another input over this one at the same offset */
        const buf *o = n_pool && below(2) ? &pool[below(n_pool)] : &seeds[below(n_seeds)];
        if (o->n == 0)
            break;
        size_t len = 1 + below(512);
        at = below(o->n);
        if (at + len > o->n)
            len = o->n - at;
        if (at + len > *n)
            len = at < *n ? *n - at : 0;
        memcpy(d + at, o->p + at, len);
        break;
    }
    case 9: /* truncate: reads that end past the end of the file */
        *n = at ? at : *n;
        break;
    }
}

static void keep(const uint8_t *d, size_t n) {
    size_t slot = n_pool < POOL_MAX ? n_pool++ : below(POOL_MAX);
    free(pool[slot].p);
    pool[slot].p = malloc(n ? n : 1);
    pool[slot].n = n;
    if (!pool[slot].p)
        exit(2);
    memcpy(pool[slot].p, d, n);
}

/* The child: mutate and run until the deadline. */
static void child_loop(shared *sh, double deadline) {
    for (uint64_t i = 0;; i++) {
        if ((i & 255) == 0 && now() >= deadline)
            _exit(0);
        const buf *parent = n_pool && below(2) ? &pool[below(n_pool)] : &seeds[below(n_seeds)];
        size_t n = parent->n;
        memcpy(sh->cur, parent->p, n);
        for (size_t m = 1 + below(8); m-- > 0;)
            mutate(sh->cur, &n);
        sh->len = n;
        LLVMFuzzerTestOneInput(sh->cur, n);
        sh->execs++;
        const fuzz_index_outcome *o = &fuzz_index_last;
        if (o->parsed && o->locate_rc == 0) {
            sh->locate_ok++;
            sh->kinds[o->kind & 7]++;
        }
        if (o->walked && o->walk_rc == 0) {
            sh->walk_ok++;
            if (o->emitted) {
                sh->walk_chunks++;
                keep(sh->cur, n);
            }
        }
    }
}

static uint64_t fnv1a(const uint8_t *d, size_t n) {
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * UINT64_C(1099511628211);
    return h;
}

static void save(const char *dir, const char *what, const shared *sh) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%016" PRIx64, dir, what, fnv1a(sh->cur, sh->len));
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(sh->cur, 1, sh->len, fp) != sh->len || fclose(fp) != 0) {
        fprintf(stderr, "mutate_main: cannot write %s\n", path);
        return;
    }
    fprintf(stderr, "mutate_main: %s input saved as %s (%zu bytes)\n", what, path, sh->len);
}

static void report(const shared *sh, double t0, const char *when) {
    double dt = now() - t0;
    fprintf(stderr,
            "mutate_main: %s %" PRIu64 " inputs in %.0f s, %.0f inputs/s; locate ok %" PRIu64 " (v1 B-tree %" PRIu64
            "), walk ok %" PRIu64 " (with chunks %" PRIu64 ")\n",
            when, sh->execs, dt, dt > 0 ? (double)sh->execs / dt : 0.0, sh->locate_ok, sh->kinds[6], sh->walk_ok,
            sh->walk_chunks);
}

int main(int argc, char **argv) {
    double seconds = 60;
    const char *crashdir = ".";
    int replay = 0, opt;
    rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    while ((opt = getopt(argc, argv, "t:s:o:r")) != -1) {
        switch (opt) {
        case 't': seconds = atof(optarg); break;
        case 's': rng_state = strtoull(optarg, NULL, 0); break;
        case 'o': crashdir = optarg; break;
        case 'r': replay = 1; break;
        default:
            fprintf(stderr, "usage: %s [-t seconds] [-s seed] [-o crashdir] [-r] corpus...\n", argv[0]);
            return 2;
        }
    }
    rng_state |= 1; /* xorshift's one fixed point is 0 */
    for (int i = optind; i < argc; i++)
        load_path(argv[i]);
    if (n_seeds == 0) {
        fprintf(stderr, "mutate_main: no inputs in the corpus\n");
        return 2;
    }
    if (replay) {
        for (size_t i = 0; i < n_seeds; i++)
            LLVMFuzzerTestOneInput(seeds[i].p, seeds[i].n);
        fprintf(stderr, "mutate_main: replayed %zu inputs\n", n_seeds);
        return 0;
    }
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mutate_main: mmap");
        return 2;
    }
    fprintf(stderr, "mutate_main: %zu seeds, %.0f s, crashes to %s\n", n_seeds, seconds, crashdir);
    double t0 = now(), deadline = t0 + seconds, last_report = t0;
    unsigned crashes = 0, hangs = 0;
    while (now() < deadline && crashes + hangs < MAX_CRASHES) {
        rng_state = rnd(); /* each child its own stream */
        pid_t pid = fork();
        if (pid < 0) {
            perror("mutate_main: fork");
            return 2;
        }
        if (pid == 0)
            child_loop(sh, deadline);
        uint64_t seen = sh->execs;
        double progress = now();
        int status;
        for (;;) {
            /* The parent only watches: a quarter-second sleep costs nothing. */
            struct timespec q = {0, 250 * 1000 * 1000};
            nanosleep(&q, NULL);
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            double t = now();
            if (sh->execs != seen) {
                seen = sh->execs;
                progress = t;
            } else if (t - progress > HANG_SECONDS) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                save(crashdir, "timeout", sh);
                hangs++;
                break;
            }
            if (t - last_report >= 10) {
                report(sh, t0, "progress:");
                last_report = t;
            }
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            continue; /* the deadline */
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            continue; /* our hang kill: already saved */
        crashes++;
        sh->execs++; /* the crashing input ran too */
        save(crashdir, "crash", sh);
    }
    report(sh, t0, "done:");
    fprintf(stderr, "mutate_main: %u crashes, %u timeouts\n", crashes, hangs);
    return crashes || hangs ? 1 : 0;
}
