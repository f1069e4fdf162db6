/* Allocates 1 MiB blocks until malloc returns NULL; prints how many MiB it got. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *blocks[4096];

int main(void) {
    int mib = 0;
    while (mib < 4096) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, mib & 0xff, 1 << 20);
        blocks[mib++] = p;  /* kept, so the allocation cannot be optimised away */
    }
    unsigned sum = 0;
    for (int i = 0; i < mib; i++) sum += (unsigned char)blocks[i][i];
    printf("allocated %d MiB then malloc returned NULL (checksum %u)\n", mib, sum);
    return 0;
}
