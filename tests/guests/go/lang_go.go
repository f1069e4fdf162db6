// Guest contract: lang_go INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: lang_go INPUT OUTPUT EXIT_CODE")
		os.Exit(2)
	}
	name := os.Getenv("NAME")
	if name == "" {
		name = "world"
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var sum int64
	fields := strings.Fields(string(data))
	for _, f := range fields {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sum += n
	}
	result := fmt.Sprintf("count=%d sum=%d\n", len(fields), sum)
	if err := os.WriteFile(os.Args[2], []byte(result), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("hello %s from go: %d numbers, sum %d\n", name, len(fields), sum)
	code, _ := strconv.Atoi(os.Args[3])
	os.Exit(code)
}
