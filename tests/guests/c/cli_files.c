/* Lists pre-opens via FD_NAMES, writes argv[2] into file argv[1], reads it back and prints it. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("FD_COUNT=%s FD_NAMES=%s\n", getenv("FD_COUNT"), getenv("FD_NAMES"));
    if (argc < 3) return 0;
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror("open for write"); return 1; }
    fputs(argv[2], f);
    fclose(f);
    char buf[256] = {0};
    f = fopen(argv[1], "r");
    if (!f) { perror("open for read"); return 1; }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    printf("read back %zu bytes: %s\n", n, buf);
    return 0;
}
