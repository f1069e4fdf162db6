/* 768x768 double matrix multiply (i-k-j order). */
#include <stdio.h>
#include <stdlib.h>
#include "timing.h"

#define N 768

int main(void) {
    double *a = malloc(sizeof(double) * N * N), *b = malloc(sizeof(double) * N * N);
    double *c = calloc((size_t)N * N, sizeof(double));
    if (!a || !b || !c) return 1;
    for (int i = 0; i < N * N; i++) {
        a[i] = (double)(i % 97) / 97.0;
        b[i] = (double)(i % 89) / 89.0;
    }
    long long t0 = now_ns();
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) {
            double aik = a[i * N + k];
            for (int j = 0; j < N; j++) c[i * N + j] += aik * b[k * N + j];
        }
    report(t0);
    double s = 0;
    for (int i = 0; i < N * N; i++) s += c[i];
    printf("%.6f\n", s);
    return 0;
}
