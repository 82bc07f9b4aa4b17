"""Prints the README's "Results" table from a benchmark result, or writes it
into the README between its markers.

    python benchmarks/readme_table.py                       # from results/latest.json
    python benchmarks/readme_table.py benchmarks/results/quick.json --write README.md
"""

import argparse
import json
import os

import _common
import report

START = "<!-- benchmark-results:start (benchmarks/readme_table.py) -->"
END = "<!-- benchmark-results:end -->"


def replace_between_markers(text, table):
    """`text` with the part between `START` and `END` replaced by `table`."""
    if START not in text or END not in text:
        raise ValueError(f"The README needs the markers {START!r} and {END!r}.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "result",
        nargs="?",
        default=os.path.join(os.path.dirname(__file__), "results", "latest.json"),
    )
    parser.add_argument("--write", metavar="README", default=None)
    args = parser.parse_args(argv)
    with open(args.result) as f:
        table = report.readme_table(json.load(f))
    if args.write is None:
        print(table, end="")
        return
    with open(args.write) as f:
        text = f.read()
    _common.write_atomic(args.write, replace_between_markers(text, table))


if __name__ == "__main__":
    main()
