/* Writes lines to stdout forever (like yes(1)); with "big" as argv[1], in 1 MiB writes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t size = (argc > 1 && strcmp(argv[1], "big") == 0) ? (1 << 20) : 4;
    char *buf = malloc(size);
    memset(buf, 'y', size);
    for (;;)
        if (write(1, buf, size) < 0) return 1;
}
