// A small Go program for the cold start-up row: the Go runtime alone is a ~2 MiB module.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("hello from Go, %d args\n", len(os.Args))
}
