/* Spins forever in pure computation, or sleeps forever with "sleep" as argv[1]. */
#include <string.h>
#include <unistd.h>

volatile unsigned long counter;

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "sleep") == 0)
        for (;;) sleep(1000);
    for (;;) counter++;
}
