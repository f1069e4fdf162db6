/* Allocates 1 MiB blocks until malloc returns NULL; prints how many MiB it got. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    int mib = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 1 << 20);
        if (++mib >= 4096) break;
    }
    printf("allocated %d MiB then malloc returned NULL\n", mib);
    return 0;
}
