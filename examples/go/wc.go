// wc FILE: print "LINES WORDS BYTES FILE", like coreutils wc.
package main

import (
	"bytes"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wc FILE")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lines := bytes.Count(data, []byte("\n"))
	words := len(bytes.Fields(data))
	fmt.Printf("%d %d %d %s\n", lines, words, len(data), os.Args[1])
}
