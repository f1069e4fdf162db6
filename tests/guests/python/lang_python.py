"""Guest contract: lang_python.py INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).

Runs on CPython 3.11 compiled to wasm32-wasi; INPUT is JSON: {"numbers": [int, ...]}.
"""

import json
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: lang_python.py INPUT OUTPUT EXIT_CODE", file=sys.stderr)
        return 2
    _, input_path, output_path, code = argv
    name = os.environ.get("NAME", "world")
    with open(input_path, encoding="utf-8") as f:
        numbers = [int(n) for n in json.load(f)["numbers"]]
    total = sum(numbers)
    with open(output_path, "w", encoding="utf-8") as f:
        f.write(f"count={len(numbers)} sum={total}\n")
    print(f"hello {name} from python: {len(numbers)} numbers, sum {total}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
