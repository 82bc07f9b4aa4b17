"""The `keras-pruning` command line: a thin layer over keras_pruning.export.

    keras-pruning export MODEL.keras --target micro --quantize int8 \\
        --calibration X.npy --out DIR [--compress] [--name NAME] [--force]
    keras-pruning report MODEL.keras

Errors print one line on stderr and exit with status 2, without a traceback.
Files are written atomically; `export` refuses to replace existing files
unless given `--force`.
"""

import argparse
import os
import sys
import zipfile

import numpy as np


class _UsageError(Exception):
    """A mistake of the user's, reported as one line."""


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-pruning", description="Export and inspect pruned Keras models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write .tflite, C source and a report")
    export.add_argument("model", help="a .keras file")
    export.add_argument("--target", choices=("litert", "micro"), default="micro")
    export.add_argument(
        "--quantize", choices=("none", "dynamic", "float16", "int8"), default="int8"
    )
    export.add_argument(
        "--calibration", help=".npy file of sample inputs (needed for int8)"
    )
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument(
        "--compress", action="store_true", help="TFLM DECODE compression (micro)"
    )
    export.add_argument("--name", default="model", help="C identifier for the C source")
    export.add_argument(
        "--force", action="store_true", help="replace existing files in --out"
    )
    report = commands.add_parser(
        "report", help="print per-weight sparsity, parameters, MACs and channels"
    )
    report.add_argument("model", help="a .keras file")
    report.add_argument(
        "--baseline", help="a .keras file of the model before pruning, to compare"
    )
    return parser


def _load_model(path):
    import keras

    import keras_pruning  # noqa: F401  registers the pruning classes

    if not os.path.isfile(path):
        raise _UsageError(f"model file not found: {path}")
    if not path.endswith(".keras"):
        raise _UsageError(f"model must be a .keras file: {path}")
    if not zipfile.is_zipfile(path):
        raise _UsageError(f"cannot load {path}: not a .keras (zip) archive")
    try:
        return keras.models.load_model(path)
    except Exception as error:
        raise _UsageError(f"cannot load {path}: {error}") from None


def _load_calibration(path):
    if path is None:
        return None
    if not os.path.isfile(path):
        raise _UsageError(f"calibration file not found: {path}")
    try:
        calibration = np.load(path, allow_pickle=False)
    except Exception as error:
        raise _UsageError(f"cannot read {path} as a .npy array: {error}") from None
    if not isinstance(calibration, np.ndarray) or calibration.ndim == 0:
        raise _UsageError(
            f"{path} must hold one array of samples, batch first (a .npy file)"
        )
    return calibration


def _export(args):
    from keras_pruning import export
    from keras_pruning.export._csource import _check_name
    from keras_pruning.export._report import report_files, write_report

    model = _load_model(args.model)
    quantize = None if args.quantize == "none" else args.quantize
    calibration = _load_calibration(args.calibration)
    if quantize == "int8" and calibration is None:
        raise _UsageError("--quantize int8 needs --calibration X.npy (sample inputs)")
    if args.compress and args.target != "micro":
        raise _UsageError("--compress applies to --target micro only")
    name = os.path.splitext(os.path.basename(args.model))[0]
    tflite_path = os.path.join(args.out, f"{name}.tflite")
    c_prefix = os.path.join(args.out, name)
    targets = [tflite_path]
    if args.target == "micro":
        targets += [f"{c_prefix}.cc", f"{c_prefix}.h", f"{c_prefix}_op_resolver.h"]
    targets += report_files(args.out)
    existing = [path for path in targets if os.path.lexists(path)]
    if existing and not args.force:
        raise _UsageError(
            f"refusing to replace {', '.join(existing)}: pass --force to replace"
        )
    # Everything that can fail for the model is done before any file is
    # written; the report is written last, so a failed write of the others
    # leaves no report that a next run would refuse to replace.
    try:
        if args.target == "micro":
            _check_name(args.name)
        data = export.to_tflite(
            model,
            quantize=quantize,
            representative_data=calibration,
            target=args.target,
        )
        if args.compress:
            data, _ = export.compress_for_micro(data)
        x = calibration[:64] if calibration is not None else None
        result = export.report(model, x=x)
        export.write_atomic(tflite_path, data, overwrite=args.force)
        if args.target == "micro":
            export.write_c_source(data, c_prefix, name=args.name, overwrite=args.force)
        write_report(result, args.out, overwrite=args.force)
    except (TypeError, ValueError, RuntimeError, OSError) as error:
        raise _UsageError(str(error)) from None
    print("\n".join(targets))


def _report(args):
    import keras_pruning

    model = _load_model(args.model)
    baseline = _load_model(args.baseline) if args.baseline else model
    # Everything that can fail is done before anything is printed.
    try:
        rows = keras_pruning.sparsity_report(model)
        compared = keras_pruning.compare_cost(baseline, model)
    except (TypeError, ValueError) as error:
        raise _UsageError(str(error)) from None
    width = max([len(r.weight) for r in rows] + [6])
    print(f"{'weight':<{width}}  {'shape':>16}  {'nonzeros':>12}  sparsity")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        print(f"{r.weight:<{width}}  {shape:>16}  {r.nonzeros:>12,}  {r.sparsity:8.1%}")
    print()
    print(f"{'layer':<{width}}  {'channels':>13}  {'parameters':>21}  {'MACs':>25}")
    for row in compared["layers"]:
        print(
            f"{row['layer']:<{width}}  {_pair(row['channels']):>13}  "
            f"{_pair(row['params']):>21}  {_pair(row['macs']):>25}"
        )
    print(
        f"total: {_pair(compared['params'])} parameters, "
        f"{_pair(compared['macs'])} MACs per input"
    )


def _pair(values):
    """`before -> after`, or one number when they are equal."""
    before, after = ("-" if v is None else f"{v:,}" for v in values)
    return after if before == after else f"{before} -> {after}"


def main(argv=None):
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        {"export": _export, "report": _report}[args.command](args)
    except _UsageError as error:
        print(f"keras-pruning: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
