/* Guest contract (same in every language): lang_c INPUT OUTPUT EXIT_CODE
 * Reads whitespace-separated integers from INPUT, writes "count=N sum=S" to OUTPUT,
 * greets $NAME on stdout and exits with EXIT_CODE. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s INPUT OUTPUT EXIT_CODE\n", argv[0]);
        return 2;
    }
    const char *name = getenv("NAME");
    if (name == NULL) name = "world";

    FILE *in = fopen(argv[1], "r");
    if (in == NULL) {
        perror(argv[1]);
        return 1;
    }
    long long n, sum = 0;
    int count = 0;
    while (fscanf(in, "%lld", &n) == 1) {
        sum += n;
        count++;
    }
    fclose(in);

    FILE *out = fopen(argv[2], "w");
    if (out == NULL) {
        perror(argv[2]);
        return 1;
    }
    fprintf(out, "count=%d sum=%lld\n", count, sum);
    if (fclose(out) != 0) {
        perror(argv[2]);
        return 1;
    }

    printf("hello %s from c: %d numbers, sum %lld\n", name, count, sum);
    return atoi(argv[3]);
}
