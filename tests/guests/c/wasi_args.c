/* Prints argv and the environment, one per line, then exits with atoi(argv[1]). */
#include <stdio.h>
#include <stdlib.h>
extern char **environ;
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("arg:%s\n", argv[i]);
    for (char **e = environ; *e; e++) printf("env:%s\n", *e);
    fflush(stdout);
    return argc > 1 ? atoi(argv[1]) : 0;
}
