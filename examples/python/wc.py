"""wc FILE: print "LINES WORDS BYTES FILE", like coreutils wc."""

import sys

if len(sys.argv) != 2:
    sys.exit("usage: wc.py FILE")
with open(sys.argv[1], "rb") as f:
    data = f.read()
print(data.count(b"\n"), len(data.split()), len(data), sys.argv[1])
