// dev/bench_copy.c — the machine's memory copy bandwidth, the ceiling of memory-bound work such
// as batch-1 decoding (dev/bench_cpu.sh, part 4). Copies a buffer of SIZE_MB (default 512) into
// another with OpenMP threads, each thread its contiguous slice; prints the best of 5 copies as
// GB/s counting bytes read and written, and one JSON line.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? (size_t)atol(argv[1]) : 512, n = mb << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) { fprintf(stderr, "error: cannot allocate 2 x %zu MiB\n", mb); return 1; }
    memset(a, 1, n); memset(b, 0, n);  // touch every page before timing
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t lo = n * t / nt, hi = n * (t + 1) / nt;
            memcpy(b + lo, a + lo, hi - lo);
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
    }
    double gbs = 2.0 * n / best / 1e9;
    printf("copy: %zu MiB, %d threads: %.1f GB/s (read + write)\n", mb, omp_get_max_threads(), gbs);
    printf("{\"copy_gbs\": %.2f, \"mib\": %zu, \"threads\": %d}\n", gbs, mb, omp_get_max_threads());
    return b[n - 1] != 1;
}
