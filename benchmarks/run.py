"""Benchmarks against TFMOT and dense training: overhead, accuracy at sparsity,
size against the information floor, latency, scale, and the overhead on every
Keras backend.

    python benchmarks/run.py            # full run: results/latest.{json,md}, plots
    python benchmarks/run.py --quick    # about 10 minutes: results/quick.{json,md}
    python benchmarks/run.py --quick --sections accuracy,size

TFMOT 0.8.1 (tf_keras) runs in a subprocess of this run (`tfmot_worker.py`),
so both are measured on the same machine in the same minutes. The JSON is
rewritten after every section; each section carries its command, library
versions, machine and timestamp. `make bench` (`QUICK=1`) runs this script.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import numpy as np  # noqa: E402
import report  # noqa: E402

SECTIONS = ("overhead", "accuracy", "size", "latency", "scale", "backends")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, 10k/2k examples"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="training seeds of local and TFMOT in the accuracy section "
        "(default: 1 with --quick, else 3)",
    )
    parser.add_argument("--out", default=RESULTS, help="folder for the results")
    parser.add_argument(
        "--name", default=None, help="file stem; defaults to 'quick' or 'latest'"
    )
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1; received {args.seeds}")
    if {"size", "latency"} & set(args.sections) and "accuracy" not in args.sections:
        parser.error("size and latency measure the accuracy section's models")
    args.name = args.name or ("quick" if args.quick else "latest")
    return args


def _data(quick, folder):
    from accuracy import sizes

    from keras_pruning.datasets import fashion_mnist

    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    train, test = sizes(quick)
    data = {
        "x_train": x_train[:train],
        "y_train": y_train[:train],
        "x_test": x_test[:test],
        "y_test": y_test[:test],
    }
    path = os.path.join(folder, "data.npz")
    np.savez(path, **data)
    return data, path


def _write(result, args):
    stem = os.path.join(args.out, args.name)
    _common.write_json(stem + ".json", result)
    _common.write_atomic(stem + ".md", report.markdown(result))


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    command = " ".join(
        ["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    import accuracy
    import backends
    import latency
    import overhead
    import scale
    import size
    from tfmot_baseline import run_tfmot

    result = {
        "run": {
            "command": command,
            "name": args.name,
            "quick": args.quick,
            "sections": args.sections,
            "versions": _common.versions(),
            "machine": _common.machine(),
        }
    }

    def finish():
        stamped = _common.stamp({}, command, started)["provenance"]
        result["run"].update(timestamp=stamped["timestamp"], seconds=stamped["seconds"])
        _write(result, args)

    with tempfile.TemporaryDirectory(prefix="keras-pruning-bench-") as folder:
        data, data_path = _data(args.quick, folder)

        def tfmot(spec, name):
            return run_tfmot(spec, folder, name)

        def section(key, function):
            begun = time.perf_counter()
            print(f"[bench] {key} ...", flush=True)
            value = function()
            extra = None
            if isinstance(value, tuple):
                value, extra = value
            result[key] = _common.stamp(value, command, begun)
            print(
                f"[bench] {key} done in {result[key]['provenance']['seconds']} s",
                flush=True,
            )
            finish()
            return extra

        if "overhead" in args.sections:
            section(
                "overhead",
                lambda: overhead.run(args.quick, data, data_path, folder, tfmot),
            )
        models = files = None
        if "accuracy" in args.sections:
            models = section(
                "accuracy",
                lambda: accuracy.run(args.quick, data, folder, tfmot, args.seeds),
            )
        calibration = (data["x_train"][:200, ..., None] / 255.0).astype("float32")
        if "size" in args.sections or "latency" in args.sections:
            files = section(
                "size", lambda: size.run(models, accuracy.SPARSITIES, calibration)
            )
        if "latency" in args.sections:
            channel, _ = size.files_of(models[latency.CHANNEL], calibration)
            sample = (data["x_test"][0, ..., None] / 255.0).astype("float32")
            section(
                "latency",
                lambda: latency.run(
                    models,
                    {"dense": files[0.0], "unstructured_80": files[0.8]},
                    channel,
                    sample,
                    repeats=5 if args.quick else 11,
                ),
            )
        if "scale" in args.sections:
            section("scale", lambda: scale.run(args.quick))
        if "backends" in args.sections:
            section("backends", lambda: backends.run(args.quick, data_path))
    finish()
    plots = report.write_plots(result, args.out, args.name)
    print(report.markdown(result))
    print(
        f"[bench] wrote {args.out}/{args.name}.json, .md and {len(plots)} plots "
        f"in {result['run']['seconds'] / 60:.1f} min"
    )
    return result


if __name__ == "__main__":
    main()
