"""The deployment report: what pruning bought, in bytes, RAM, time and accuracy."""

import gzip
import json
import math
import os
import tempfile

import keras
import numpy as np

from keras_pruning._files import check_overwrite, check_path, write_atomic
from keras_pruning.cost import compare_cost
from keras_pruning.export._convert import to_tflite
from keras_pruning.export._micro_compress import compress_for_micro
from keras_pruning.export._runtime import min_arena_bytes, verify
from keras_pruning.prune import _is_graph_model, pruning_wrappers, strip_pruning
from keras_pruning.schedules import _check_int
from keras_pruning.stats import sparsity_report


def _entropy_bits(sparsity):
    """Binary entropy `H(s) = -s log2 s - (1 - s) log2(1 - s)`, in bits."""
    if sparsity in (0.0, 1.0):
        return 0.0
    return -sparsity * math.log2(sparsity) - (1 - sparsity) * math.log2(1 - sparsity)


def information_floor_bytes(rows, bits=8):
    """Bytes to store the prunable weights at `bits` per nonzero plus the mask's
    entropy: `sum(nnz * bits + n * H(s)) / 8` over weights."""
    bits = _check_int("bits", bits, 1)
    total = sum(r.nonzeros * bits + r.size * _entropy_bits(r.sparsity) for r in rows)
    return int(math.ceil(total / 8))


def _keras_file_bytes(model):
    with tempfile.TemporaryDirectory(prefix="keras-pruning-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return os.path.getsize(path)


def _load(model):
    if isinstance(model, keras.Model):
        return model, None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"`model` file does not exist. Received: model={path!r}")
        try:
            return keras.models.load_model(path), os.path.getsize(path)
        except Exception as error:
            raise ValueError(
                f"`model` is not a loadable Keras file: {error}. Received: model={path!r}"
            ) from None
    raise TypeError(
        "`model` must be a keras.Model or the path of a .keras file. "
        f"Received: model of type {type(model).__name__}"
    )


def _check_samples(x, y):
    if x is not None and not isinstance(x, np.ndarray):
        raise TypeError(
            "`x` must be a NumPy array of sample inputs, batch first, or None. "
            f"Received: x of type {type(x).__name__}"
        )
    if x is not None and (x.ndim == 0 or x.shape[0] == 0):
        raise ValueError(
            f"`x` must hold at least one sample. Received: x of shape {x.shape}"
        )
    if y is None:
        return
    if x is None:
        raise ValueError(
            "`y` labels the samples of `x`; pass `x` too. Received: x=None"
        )
    labels = np.asarray(y)
    if labels.dtype.kind not in "iu" or labels.reshape(-1).shape[0] != x.shape[0]:
        raise ValueError(
            f"`y` must hold one integer label per sample of `x` ({x.shape[0]}). "
            f"Received: y of shape {labels.shape} and dtype {labels.dtype}"
        )


def report(model, *, x=None, y=None, baseline=None, path=None, overwrite=False):
    """Measures what pruning bought, and writes it as JSON and Markdown.

    Args:
        model: a pruned or stripped `keras.Model`, or a `.keras` path.
        x: sample inputs (float, batch first). With `x`, the report adds int8
            LiteRT and TFLite Micro files (calibrated on `x[:200]`), the
            compressed micro file, the TFLM arena, invoke latencies and
            output errors. Without it, only float files are measured.
        y: integer labels for `x`, for accuracies.
        baseline: the dense model before pruning, for its accuracy and, in
            `"cost"`, parameters, MACs and channels before and after.
        path: a directory; `report.json` and `report.md` are written there,
            atomically.
        overwrite: with `path`, replace existing report files. Defaults to
            `False`.

    Returns:
        The report as a dict (what `report.json` holds).

    Raises:
        FileExistsError: if a report file exists in `path` and `overwrite` is
            False (checked before any measurement).
    """
    files = [] if path is None else report_files(check_path(path))
    check_overwrite(files, overwrite)
    _check_samples(x, y)
    model, keras_bytes = _load(model)
    plain = strip_pruning(model) if pruning_wrappers(model) else model
    if keras_bytes is None:
        keras_bytes = _keras_file_bytes(plain)
    if baseline is not None and not isinstance(baseline, keras.Model):
        raise TypeError(
            f"`baseline` must be a keras.Model. Received: baseline of type {type(baseline).__name__}"
        )
    rows = sparsity_report(plain)
    prunable = sum(r.size for r in rows)
    nonzeros = sum(r.nonzeros for r in rows)
    result = {
        "model": plain.name,
        "layers": [
            {
                "layer": r.layer,
                "weight": r.weight,
                "shape": list(r.shape),
                "size": r.size,
                "nonzeros": r.nonzeros,
                "sparsity": r.sparsity,
            }
            for r in rows
        ],
        "parameters": {
            "total": int(plain.count_params()),
            "prunable": prunable,
            "prunable_nonzero": nonzeros,
            "sparsity": 1 - nonzeros / prunable if prunable else 0.0,
        },
        "files": {
            "keras": keras_bytes,
            "tflite_float32": len(to_tflite(plain)),
        },
        "information_floor_int8": information_floor_bytes(rows),
    }
    if _is_graph_model(plain):
        result["cost"] = _cost(plain, baseline)
    if x is not None:
        calibration = x[:200]
        litert = to_tflite(plain, quantize="int8", representative_data=calibration)
        sparse = to_tflite(
            plain, quantize="int8", representative_data=calibration, sparse=True
        )
        micro = to_tflite(
            plain, quantize="int8", representative_data=calibration, target="micro"
        )
        compressed, compression = compress_for_micro(micro)
        result["files"].update(
            {
                "litert_int8": len(litert),
                "litert_int8_sparse": len(sparse),
                "micro_int8": len(micro),
                "micro_int8_compressed": len(compressed),
                "micro_int8_gzip": len(gzip.compress(micro, compresslevel=9)),
            }
        )
        micro_check = verify(micro, plain, x, y=y, runtime="micro")
        litert_check = verify(litert, plain, x, y=y, runtime="litert")
        result["micro"] = {
            "bytes": len(micro),
            "compressed_bytes": len(compressed),
            "compressed_tensors": len(compression.tensors),
            "arena_bytes": min_arena_bytes(micro),
            "compressed_arena_bytes": min_arena_bytes(compressed),
            "max_abs_error": micro_check.max_abs_error,
            "argmax_agreement": micro_check.argmax_agreement,
            "invoke_ms": micro_check.invoke_ms,
            "accuracy": micro_check.accuracy,
        }
        result["litert"] = {
            "bytes": len(litert),
            "max_abs_error": litert_check.max_abs_error,
            "argmax_agreement": litert_check.argmax_agreement,
            "invoke_ms": litert_check.invoke_ms,
            "accuracy": litert_check.accuracy,
        }
        if y is not None:
            result["accuracy"] = {
                "pruned": micro_check.keras_accuracy,
                "baseline": _accuracy(baseline, x, y) if baseline is not None else None,
            }
    if path is not None:
        write_report(result, path, overwrite=overwrite)
    return result


def report_files(path):
    """The files a report is written to in the folder `path`."""
    return [os.path.join(path, "report.json"), os.path.join(path, "report.md")]


def write_report(result, path, *, overwrite=False):
    """Writes the dict `result` of `report` into the folder `path`, as
    `report.json` and `report.md`, each atomically."""
    json_path, markdown_path = report_files(path)
    text = json.dumps(_finite_or_none(result), indent=2, allow_nan=False)
    write_atomic(json_path, text + "\n", overwrite=overwrite)
    write_atomic(markdown_path, format_markdown(result), overwrite=overwrite)


def _finite_or_none(value):
    """`value` with NaN and infinite floats replaced by None: JSON has no
    such numbers (a model whose outputs overflow has infinite errors)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cost(model, baseline):
    """Parameters, MACs and per-layer channels, against `baseline` if given."""
    compared = compare_cost(baseline if baseline is not None else model, model)
    return {
        "baseline": baseline is not None,
        "params": list(compared["params"]),
        "macs": list(compared["macs"]),
        "flops": list(compared["flops"]),
        "layers": [
            {key: list(v) if isinstance(v, tuple) else v for key, v in row.items()}
            for row in compared["layers"]
        ],
    }


def _accuracy(model, x, y):
    predictions = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(predictions.argmax(-1) == np.asarray(y).reshape(-1)))


def _kb(size):
    return f"{size / 1024:,.1f} KB"


def _cost_markdown(cost):
    def pair(values):
        before, after = values
        if not cost["baseline"] or before == after:
            return f"{after:,}" if after is not None else "-"
        return f"{'-' if before is None else f'{before:,}'} → {'-' if after is None else f'{after:,}'}"

    lines = ["", "## Compute", ""]
    if cost["baseline"]:
        lines += ["Before → after, against the baseline model.", ""]
    lines += [
        "| layer | kind | channels | parameters | MACs |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in cost["layers"]:
        lines.append(
            f"| {row['layer']} | {row['kind']} | {pair(row['channels'])} | "
            f"{pair(row['params'])} | {pair(row['macs'])} |"
        )
    lines += [
        "",
        f"Total: {pair(cost['params'])} parameters, {pair(cost['macs'])} MACs "
        f"({pair(cost['flops'])} FLOPs) per input.",
    ]
    return lines


def format_markdown(result):
    """The report as a Markdown page."""
    lines = [f"# Deployment report: {result['model']}", "", "## Sparsity", ""]
    lines += ["| weight | shape | nonzeros | sparsity |", "| --- | --- | ---: | ---: |"]
    for row in result["layers"]:
        shape = "x".join(map(str, row["shape"]))
        lines.append(
            f"| {row['weight']} | {shape} | {row['nonzeros']:,} / {row['size']:,} | "
            f"{row['sparsity']:.1%} |"
        )
    params = result["parameters"]
    lines += [
        "",
        f"Parameters: {params['total']:,} in all; prunable {params['prunable']:,}, "
        f"of which {params['prunable_nonzero']:,} nonzero ({params['sparsity']:.1%} sparse).",
        "",
        "## Files",
        "",
        "| file | size | vs information floor |",
        "| --- | ---: | ---: |",
    ]
    floor = result["information_floor_int8"]
    for name, size in result["files"].items():
        ratio = f"{size / floor:.2f}x" if floor else "-"
        lines.append(f"| {name} | {_kb(size)} | {ratio} |")
    lines += [
        "",
        f"Information floor of the prunable int8 weights (`nnz*8 + n*H(s)` bits): "
        f"{_kb(floor)}.",
    ]
    if "cost" in result:
        lines += _cost_markdown(result["cost"])
    if "micro" in result:
        micro, litert = result["micro"], result["litert"]
        lines += [
            "",
            "## Runtimes",
            "",
            "| runtime | invoke | max abs error | argmax agreement | accuracy |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, run in (("LiteRT (builtin)", litert), ("TFLite Micro", micro)):
            accuracy = "-" if run["accuracy"] is None else f"{run['accuracy']:.1%}"
            lines.append(
                f"| {name} | {run['invoke_ms']:.3f} ms | {run['max_abs_error']:.4g} | "
                f"{run['argmax_agreement']:.1%} | {accuracy} |"
            )
        lines += [
            "",
            f"TFLite Micro arena: {micro['arena_bytes']:,} B "
            f"(compressed file: {micro['compressed_arena_bytes']:,} B, decoded weights "
            "included).",
        ]
    if result.get("accuracy"):
        acc = result["accuracy"]
        baseline = "-" if acc["baseline"] is None else f"{acc['baseline']:.1%}"
        lines += [
            "",
            f"Keras accuracy: baseline {baseline}, pruned {acc['pruned']:.1%}.",
        ]
    return "\n".join(lines) + "\n"
