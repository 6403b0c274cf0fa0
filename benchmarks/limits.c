/* limits.c - the machine's own limits for `make bench`, one JSON line each.
 *
 *   limits memcpy BYTES THREADS SECONDS
 *       Each thread copies its own BYTES-sized buffer into another, over and
 *       over, for about SECONDS. Small buffers (1 MiB) stay in cache; large
 *       ones (64 MiB) outgrow L3 and measure DRAM. Reports the aggregate.
 *   limits inflate FILE LIST THREADS OUT_BYTES
 *       LIST holds "offset size" lines: the deflate chunks of a dataset in
 *       FILE. All stored chunks are read into memory first, then THREADS
 *       threads decode them with libdeflate (zlib wrapper) into per-thread
 *       buffers of OUT_BYTES. Reports decoded bytes per second: the deflate
 *       limit multiload's decoder is compared with (no shuffle, no copy).
 *
 * Build: cc -O2 -o limits limits.c -lpthread -ldeflate
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- memcpy ---- */

typedef struct {
    size_t bytes;
    double seconds;
    pthread_barrier_t *start;
    double copied; /* out: bytes copied */
    double elapsed;
} copy_job;

static void *copy_main(void *arg) {
    copy_job *j = arg;
    unsigned char *a = aligned_alloc(4096, j->bytes), *b = aligned_alloc(4096, j->bytes);
    if (!a || !b)
        return NULL;
    memset(a, 1, j->bytes);
    memset(b, 2, j->bytes);
    pthread_barrier_wait(j->start);
    double t0 = now(), t;
    size_t n = 0;
    do {
        for (int k = 0; k < 8; k++) {
            memcpy(b, a, j->bytes);
            n++;
            __asm__ volatile("" ::"r"(b) : "memory");
        }
        t = now();
    } while (t - t0 < j->seconds);
    j->copied = (double)n * (double)j->bytes;
    j->elapsed = t - t0;
    free(a);
    free(b);
    return NULL;
}

static int run_memcpy(size_t bytes, int threads, double seconds) {
    pthread_t th[64];
    copy_job jobs[64];
    pthread_barrier_t bar;
    if (threads < 1 || threads > 64)
        return 2;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        jobs[i] = (copy_job){.bytes = bytes, .seconds = seconds, .start = &bar};
        pthread_create(&th[i], NULL, copy_main, &jobs[i]);
    }
    double copied = 0, elapsed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        copied += jobs[i].copied;
        if (jobs[i].elapsed > elapsed)
            elapsed = jobs[i].elapsed;
    }
    printf("{\"bytes\": %.0f, \"seconds\": %.6f}\n", copied, elapsed);
    return 0;
}

/* ---- inflate ---- */

typedef struct {
    unsigned char **src;
    size_t *len;
    size_t n;
    size_t out_bytes;
    _Atomic size_t *next;
    double decoded; /* out */
    int failed;     /* out */
} inflate_job;

static void *inflate_main(void *arg) {
    inflate_job *j = arg;
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    unsigned char *out = malloc(j->out_bytes);
    if (!d || !out) {
        j->failed = 1;
        return NULL;
    }
    for (;;) {
        size_t i = atomic_fetch_add(j->next, 1);
        if (i >= j->n)
            break;
        size_t got = 0;
        if (libdeflate_zlib_decompress(d, j->src[i], j->len[i], out, j->out_bytes, &got) !=
            LIBDEFLATE_SUCCESS) {
            j->failed = 1;
            break;
        }
        j->decoded += (double)got;
    }
    free(out);
    libdeflate_free_decompressor(d);
    return NULL;
}

static int run_inflate(const char *file, const char *list, int threads, size_t out_bytes) {
    FILE *lf = fopen(list, "r");
    int fd = open(file, O_RDONLY);
    if (!lf || fd < 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "limits: cannot open %s or %s\n", file, list);
        return 2;
    }
    size_t cap = 1024, n = 0;
    unsigned char **src = malloc(cap * sizeof *src);
    size_t *len = malloc(cap * sizeof *len);
    unsigned long long off, size;
    while (fscanf(lf, "%llu %llu", &off, &size) == 2) {
        if (n == cap) {
            cap *= 2;
            src = realloc(src, cap * sizeof *src);
            len = realloc(len, cap * sizeof *len);
        }
        src[n] = malloc(size);
        if (pread(fd, src[n], size, (off_t)off) != (ssize_t)size) {
            fprintf(stderr, "limits: short read of chunk %zu\n", n);
            return 2;
        }
        len[n++] = size;
    }
    fclose(lf);
    close(fd);
    _Atomic size_t next = 0;
    pthread_t th[64];
    inflate_job jobs[64];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (inflate_job){.src = src, .len = len, .n = n, .out_bytes = out_bytes, .next = &next};
        pthread_create(&th[i], NULL, inflate_main, &jobs[i]);
    }
    double decoded = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        decoded += jobs[i].decoded;
        failed |= jobs[i].failed;
    }
    double t = now() - t0;
    if (failed) {
        fprintf(stderr, "limits: a chunk did not decode\n");
        return 1;
    }
    printf("{\"bytes\": %.0f, \"seconds\": %.6f, \"chunks\": %zu}\n", decoded, t, n);
    for (size_t i = 0; i < n; i++)
        free(src[i]);
    free(src);
    free(len);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "memcpy") == 0)
        return run_memcpy(strtoull(argv[2], NULL, 10), atoi(argv[3]), atof(argv[4]));
    if (argc == 6 && strcmp(argv[1], "inflate") == 0)
        return run_inflate(argv[2], argv[3], atoi(argv[4]), strtoull(argv[5], NULL, 10));
    fprintf(stderr, "usage: limits memcpy BYTES THREADS SECONDS | limits inflate FILE LIST THREADS OUT_BYTES\n");
    return 2;
}
