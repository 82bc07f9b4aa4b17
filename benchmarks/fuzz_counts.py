"""How many bad inputs the argument-validation fuzzer tries.

Runs every case of `tests/test_argument_validation.py` with its own
hypothesis settings and counts the examples drawn (hypothesis stops early for
a strategy with few distinct values). docs/guides/reliability.md quotes it.

    .venv/bin/python benchmarks/fuzz_counts.py
"""

import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hypothesis import given  # noqa: E402

from tests import test_argument_validation as fuzz  # noqa: E402


def _count(case):
    drawn = []

    @fuzz.FUZZ_SETTINGS
    @given(value=case.bad)
    def bad_call(value):
        drawn.append(value)
        try:
            case.function(**(case.valid() | {case.argument: value}))
        except (ValueError, TypeError, FileExistsError):
            return
        raise AssertionError(f"{case}: no error for {value!r}")

    bad_call()
    return len(drawn)


def main():
    counts = {}
    with tempfile.TemporaryDirectory() as folder:
        for case in fuzz._cases(pathlib.Path(folder)):
            counts[str(case)] = _count(case)
    print(
        json.dumps(
            {
                "cases": len(counts),
                "functions": len({c.split(":")[0] for c in counts}),
                "examples": sum(counts.values()),
                "examples_per_case_max": fuzz.EXAMPLES_PER_CASE,
            }
        )
    )


if __name__ == "__main__":
    main()
