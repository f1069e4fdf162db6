/* Traps (unreachable) inside a named function. */
#include <stdio.h>

__attribute__((noinline)) void explode(void) { __builtin_trap(); }

int main(void) {
    puts("about to trap");
    fflush(stdout);
    explode();
    return 0;
}
