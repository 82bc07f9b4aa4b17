"""Targets, Markdown tables and plots from a benchmark result (the JSON
`run.py` writes). Pure functions of that dict, except `write_plots`."""

import io
import os

import _common

OVERHEAD_MAX = 1.05
DENSE_GAP_POINTS = 0.5
SIZE_MAX_RATIO = 1.3
CHANNEL_SPEEDUP_MIN = 1.8
LINEAR_SLOPE_MAX = 1.1


def _row(target, measured, passed):
    return {"target": target, "measured": measured, "pass": bool(passed)}


def targets(result):
    """The issue's targets, each as `{"target", "measured", "pass"}`; a
    section missing from `result` gives no rows."""
    rows = []
    overhead = result.get("overhead")
    if overhead:
        for name, pair in overhead["models"].items():
            ours, theirs = pair["keras_pruning"]["ratio"], pair["tfmot"]["ratio"]
            rows.append(
                _row(
                    f"Overhead {name}: pruned/dense step time <= {OVERHEAD_MAX}",
                    f"{ours:.3f}x",
                    ours <= OVERHEAD_MAX,
                )
            )
            rows.append(
                _row(
                    f"Overhead {name}: <= TFMOT's ratio",
                    f"{ours:.3f}x vs TFMOT {theirs:.3f}x",
                    ours <= theirs,
                )
            )
    for backend, models in result.get("backends", {}).get("backends", {}).items():
        for name, row in models.items():
            rows.append(
                _row(
                    f"Overhead {name} on {backend}: pruned/dense <= {OVERHEAD_MAX}",
                    f"{row['ratio']:.3f}x",
                    row["ratio"] <= OVERHEAD_MAX,
                )
            )
    accuracy = result.get("accuracy")
    if accuracy:
        methods = accuracy["methods"]
        for s in accuracy["setup"]["sparsities"]:
            ours, theirs = methods["local"][str(s)], methods["tfmot"][str(s)]
            rows.append(
                _row(
                    f"Accuracy at {s:.0%}: local >= TFMOT{_over(ours)}",
                    f"{_pct(ours['accuracy'])}% vs {_pct(theirs['accuracy'])}%",
                    ours["accuracy"] >= theirs["accuracy"],
                )
            )
        dense = accuracy["dense"]["accuracy"]
        at80 = methods["local"]["0.8"]["accuracy"]
        rows.append(
            _row(
                f"Accuracy at 80%: local within {DENSE_GAP_POINTS} points of dense",
                f"{100 * at80:.2f}% vs dense {100 * dense:.2f}%",
                100 * (dense - at80) <= DENSE_GAP_POINTS,
            )
        )
    size = result.get("size")
    if size and "0.8" in size["sparsities"]:
        ratio = size["sparsities"]["0.8"]["ratio_to_floor"]["micro_compressed"]
        rows.append(
            _row(
                f"Size at 80%: compressed micro file <= {SIZE_MAX_RATIO}x the floor",
                f"{ratio:.3f}x",
                ratio <= SIZE_MAX_RATIO,
            )
        )
    latency = result.get("latency")
    if latency:
        speedup = latency["speedup_vs_dense"].get("channel_50/tflm")
        rows.append(
            _row(
                f"Latency: channel pruning at 50% >= {CHANNEL_SPEEDUP_MIN}x in TFLite Micro",
                "-" if speedup is None else f"{speedup:.2f}x",
                speedup is not None and speedup >= CHANNEL_SPEEDUP_MIN,
            )
        )
    scale = result.get("scale")
    if scale:
        slope = scale["loglog_slope"]["mask_update"]
        rows.append(
            _row(
                f"Scale: mask-update time at most linear in parameters "
                f"(log-log slope <= {LINEAR_SLOPE_MAX})",
                f"{slope:.2f}",
                slope <= LINEAR_SLOPE_MAX,
            )
        )
    return rows


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _over(row):
    """ " (mean of n seeds)" for a row averaged over training seeds."""
    count = len(row.get("seeds", ()))
    return f" (mean of {count} seeds)" if count > 1 else ""


def _accuracy_cell(row):
    """Mean accuracy, with `± std` when averaged over seeds."""
    cell = _pct(row.get("accuracy"))
    if len(row.get("seeds", ())) > 1:
        cell += f" ± {100 * row['std']:.2f}"
    return cell


def _targets_table(rows):
    lines = ["| target | measured | |", "| --- | --- | --- |"]
    lines += [
        f"| {r['target']} | {r['measured']} | {'PASS' if r['pass'] else '**FAIL**'} |"
        for r in rows
    ]
    return lines


def _overhead_md(section):
    lines = [
        "| model | parameters | library | dense step (ms) | pruned / dense "
        "| no-op callback / dense | pruned / no-op callback "
        "| masks never updated / dense | held at 0 (opt-in) / dense "
        "| mask / weight bytes | pruning state / weight bytes |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, pair in section["models"].items():
        for library, row in pair.items():
            lines.append(
                f"| {name} | {row['parameters']:,} | {library} | "
                f"{row['dense_step_ms']:.2f} | {row['ratio']:.3f}x | "
                f"{row['noop_callback_ratio']:.3f}x | "
                f"{row['ratio_to_noop_callback']:.3f}x | "
                f"{_ratio(row, 'never_updated_ratio')} | "
                f"{_ratio(row, 'held_ratio')} | "
                f"{row['mask_over_weight_bytes']:.3f} | "
                f"{row['state_over_weight_bytes']:.3f} |"
            )
    lines += [
        "",
        "Ratios: medians of per-round ratios of interleaved epochs. The no-op "
        "callback is the dense model trained with a callback whose "
        "`on_train_batch_begin` does nothing (`UpdatePruningStep` is such a "
        "per-batch callback): it isolates what the training loop charges for "
        "any per-batch callback. Masks never updated: the model pruned with a "
        "schedule that never updates a mask (`ConstantSparsity` from step "
        "10^9), trained with its callback: the per-step masking alone. Held "
        "at 0: the pruned model trained with "
        "`UpdatePruningStep(hold_pruned_weights_at_zero=True)`, which masks "
        "gradients only (an opt-in; the targets measure the default).",
    ]
    return lines


def _ratio(row, key):
    """`row[key]` as a ratio, or a dash where it was not measured (the opt-in
    for TFMOT; contenders added after a result file was written)."""
    return f"{row[key]:.3f}x" if key in row else "-"


def _paired_differences(section):
    """`local` minus `tfmot`, and Keras 3's dense control minus tf_keras's,
    seed by seed (runs of one seed train on the same batches), in points."""
    local, theirs = section["methods"].get("local"), section["methods"].get("tfmot")
    if not local or not theirs:
        return ""

    def gaps(ours, other):
        pairs = zip(ours["accuracies"], other["accuracies"], strict=True)
        return " / ".join(f"{100 * (a - b):+.2f}" for a, b in pairs)

    cells = [
        f"{s:.0%}: " + gaps(local[str(s)], theirs[str(s)])
        for s in section["setup"]["sparsities"]
    ]
    control = gaps(section["dense_control"], section["tfmot_dense_control"])
    return (
        "Seed by seed (the runs of one seed train on the same batches in both "
        "frameworks), local minus TFMOT, in points: "
        + "; ".join(cells + [f"dense control: {control}"])
        + "."
    )


def _accuracy_md(section):
    setup, methods = section["setup"], section["methods"]
    sparsities = setup["sparsities"]
    lines = [
        "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
        "| --- | " + " | ".join("---:" for _ in sparsities) + " |",
    ]
    for method, rows in methods.items():
        if method == "2:4":
            continue
        cells = []
        for s in sparsities:
            row = rows.get(str(s), {})
            cell = _accuracy_cell(row)
            if row and abs(row["sparsity"] - s) > 0.01:
                cell += f" ({row['sparsity']:.1%} of kernel weights)"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    two_four = methods.get("2:4", {}).get("0.5")
    lines += [
        "",
        f"Dense (3 epochs): {_pct(section['dense']['accuracy'])}%; dense control "
        "(3 + 2 epochs, no pruning): Keras 3 "
        f"{_accuracy_cell(section['dense_control'])}%, tf_keras "
        f"{_accuracy_cell(section['tfmot_dense_control'])}% (the same dense "
        "weights trained 2 more epochs in TFMOT's framework).",
    ]
    paired = _paired_differences(section)
    if paired:
        lines += ["", paired]
    if two_four:
        lines.append(
            f"2:4 (fixed pattern, {two_four['sparsity']:.1%} of kernel weights): "
            f"{_pct(two_four['accuracy'])}%."
        )
    lines += [
        "",
        f"{setup['train_examples']:,} training and {setup['test_examples']:,} test "
        f"examples; batch {setup['batch_size']}; {setup['optimizer']}. "
        "`± std`: mean and sample standard deviation over training seeds "
        f"{setup.get('seeds', {}).get('local', [0])} (a seed fixes the order "
        "of the training examples, the same in both frameworks; the other "
        "methods ran with seed 0). " + setup["note"],
    ]
    return lines


def _size_md(section):
    lines = [
        "| sparsity | floor | int8 | gzip | LiteRT sparse | micro | micro compressed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, row in section["sparsities"].items():
        cells = [
            f"{row['bytes'][name]:,} ({row['ratio_to_floor'][name]:.2f}x)"
            for name in (
                "int8",
                "int8_gzip",
                "int8_sparse",
                "micro",
                "micro_compressed",
            )
        ]
        lines.append(
            f"| {float(s):.0%} | {row['floor_bytes']:,} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Bytes (ratio to the floor). Floor: " + section["floor"] + ".",
        "",
        "Where the compressed micro file exceeds the floor: its PRUNE encoding "
        "stores a 1-bit mask per kernel weight (n/8 bytes, against n*H(s)/8 in "
        "the floor), and the file holds more than kernels: non-kernel bytes "
        "are the compressed file's bytes beyond its kernels (encoded: mask, "
        "kept values and header; or dense: one byte per weight), that is "
        "biases, quantization parameters and the graph.",
        "",
        "| sparsity | floor | 1-bit masks | n*H(s)/8 | non-kernel bytes "
        "| micro compressed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, row in section["sparsities"].items():
        entropy = row["floor_bytes"] - row["kernel_nonzeros"]
        lines.append(
            f"| {float(s):.0%} | {row['floor_bytes']:,} | {row['mask_bytes_1bit']:,} "
            f"| {entropy:,} | {row['non_kernel_bytes']:,} "
            f"| {row['bytes']['micro_compressed']:,} |"
        )
    return lines


def _latency_md(section):
    runtimes = [
        ("litert_xnnpack", "LiteRT XNNPACK"),
        ("litert_builtin", "LiteRT builtin"),
        ("tflm", "TFLite Micro"),
    ]
    lines = [
        "| model | parameters | "
        + " | ".join(label for _, label in runtimes)
        + " | TFLM arena |",
        "| --- | ---: | " + " | ".join("---:" for _ in runtimes) + " | ---: |",
    ]
    ms, speed = section["invoke_ms"], section["speedup_vs_dense"]
    for model in section["models"]:
        cells = []
        for runtime, _ in runtimes:
            key = f"{model}/{runtime}"
            if key not in ms:
                cells.append("-")
                continue
            extra = f" ({speed[key]:.2f}x)" if key in speed else ""
            cells.append(f"{1000 * ms[key]:.0f} us{extra}")
        lines.append(
            f"| {model} | {section['parameters'][model]:,} | "
            + " | ".join(cells)
            + f" | {section['tflm_arena_bytes'][model]:,} B |"
        )
    sparse_rows = [
        (key, value)
        for key, value in ms.items()
        if key.endswith("_sparse_file") or key.endswith("_compressed_file")
    ]
    if sparse_rows:
        lines.append("")
        for key, value in sparse_rows:
            extra = f" ({speed[key]:.2f}x dense)" if key in speed else ""
            lines.append(f"- `{key}`: {1000 * value:.0f} us{extra}")
        compressed = section["tflm_arena_bytes"].get("unstructured_80/compressed_file")
        if compressed is not None:
            lines.append(f"- TFLM arena of the compressed file: {compressed:,} B")
    for key, error in section["errors"].items():
        lines.append(f"- `{key}`: did not run ({error})")
    lines += [
        "",
        "Median over interleaved rounds of the mean single-sample invoke time, "
        "one thread; (speedup against the dense model in the same runtime).",
    ]
    return lines


def _backends_md(section):
    lines = [
        "| backend | model | dense step (ms) | pruned / dense "
        "| no-op callback / dense | pruned / no-op callback "
        "| masks never updated / dense | held at 0 (opt-in) / dense "
        "| mask update (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, models in section["backends"].items():
        for name, row in models.items():
            lines.append(
                f"| {backend} | {name} | {row['dense_step_ms']:.2f} | "
                f"{row['ratio']:.3f}x | {row['noop_callback_ratio']:.3f}x | "
                f"{row['ratio_to_noop_callback']:.3f}x | "
                f"{_ratio(row, 'never_updated_ratio')} | "
                f"{_ratio(row, 'held_ratio')} | {row['mask_update_ms']:.1f} |"
            )
    lines += [
        "",
        "One process per backend, one after the other; `fit` compiles as the "
        "backend does by default (PyTorch: eager). Masks never updated and "
        "held at 0: as in section 1. Mask update: the median of 30 of what "
        "`UpdatePruningStep` does before a step that updates every mask of the "
        "model (the update, then clearing the optimizer's first moments).",
    ]
    return lines


def _scale_md(section):
    lines = [
        "| model | parameters | wrap (s) | mask update (ms) | strip (s) | export (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in section["models"].items():
        t = row["seconds"]
        lines.append(
            f"| {name} | {row['parameters']:,} | {t['wrap']:.2f} | "
            f"{1000 * t['mask_update']:.1f} | {t['strip']:.2f} | {t['export']:.1f} |"
        )
    slopes = ", ".join(f"{op} {v:.2f}" for op, v in section["loglog_slope"].items())
    lines += ["", f"Log-log slope of time against parameters: {slopes}."]
    return lines


SECTIONS = (
    ("overhead", "1. Training overhead", _overhead_md),
    ("accuracy", "2. Accuracy at sparsity (test accuracy, %)", _accuracy_md),
    ("size", "3. Size against the information floor", _size_md),
    ("latency", "4. Latency (int8, batch 1)", _latency_md),
    ("scale", "5. Scale", _scale_md),
    ("backends", "6. Training overhead on every backend", _backends_md),
)


def markdown(result):
    """The whole result as a Markdown page."""
    run = result["run"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    lines = [
        f"# Benchmarks ({'quick' if run['quick'] else 'full'} run)",
        "",
        f"Command: `{run['command']}`. Finished {run['timestamp']} after "
        f"{run['seconds'] / 60:.1f} min on {run['machine']['cpu_count']} CPUs "
        f"({run['machine']['platform']}).",
        "",
        f"Versions: {versions}.",
        "",
        "## Targets",
        "",
        *_targets_table(targets(result)),
    ]
    for key, title, render in SECTIONS:
        if key in result:
            command = result[key]["provenance"]["command"]
            lines += ["", f"## {title}", "", *render(result[key])]
            lines += [
                "",
                f"Section time {result[key]['provenance']['seconds']} s; "
                f"command `{command}`.",
            ]
    return "\n".join(lines) + "\n"


def readme_table(result):
    """The README's "Results" table: every target with its measurement."""
    run = result["run"]
    lines = [
        f"From `{run['command']}` ({'quick' if run['quick'] else 'full'} run, "
        f"{run['timestamp'][:10]}, {run['machine']['cpu_count']} CPUs, "
        f"{run['seconds'] / 60:.0f} min); details in "
        f"`benchmarks/results/{run['name']}.md`.",
        "",
        *_targets_table(targets(result)),
    ]
    return "\n".join(lines) + "\n"


def _save(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _common.write_atomic(path, buffer.getvalue())


def write_plots(result, folder, prefix):
    """PNG plots of the sections present; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = []
    accuracy = result.get("accuracy")
    if accuracy:
        figure, axis = plt.subplots(figsize=(6, 4))
        for method, rows in accuracy["methods"].items():
            points = sorted((r["sparsity"], 100 * r["accuracy"]) for r in rows.values())
            style = "s" if method == "2:4" else "o-"
            axis.plot(*zip(*points, strict=True), style, label=method)
        axis.axhline(
            100 * accuracy["dense"]["accuracy"], color="k", ls="--", label="dense"
        )
        axis.set_xlabel("sparsity of the kernel weights")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title("Fashion-MNIST CNN: accuracy against sparsity")
        axis.legend()
        axis.grid(alpha=0.3)
        paths.append(os.path.join(folder, f"{prefix}_accuracy.png"))
        _save(figure, paths[-1])
        plt.close(figure)
    size = result.get("size")
    if size:
        figure, axis = plt.subplots(figsize=(6, 4))
        rows = size["sparsities"]
        xs = [float(s) for s in rows]
        for name in ("int8", "int8_gzip", "int8_sparse", "micro_compressed"):
            axis.plot(
                xs, [r["bytes"][name] / 1024 for r in rows.values()], "o-", label=name
            )
        axis.plot(
            xs, [r["floor_bytes"] / 1024 for r in rows.values()], "k--", label="floor"
        )
        axis.set_yscale("log")
        axis.set_xlabel("sparsity")
        axis.set_ylabel("KiB")
        axis.set_title("File size against the information floor")
        axis.legend()
        axis.grid(alpha=0.3)
        paths.append(os.path.join(folder, f"{prefix}_size.png"))
        _save(figure, paths[-1])
        plt.close(figure)
    scale = result.get("scale")
    if scale:
        figure, axis = plt.subplots(figsize=(6, 4))
        models = scale["models"].values()
        params = [m["parameters"] for m in models]
        for op in scale["loglog_slope"]:
            axis.plot(params, [m["seconds"][op] for m in models], "o-", label=op)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("parameters")
        axis.set_ylabel("seconds")
        axis.set_title("Cost against model size")
        axis.legend()
        axis.grid(alpha=0.3)
        paths.append(os.path.join(folder, f"{prefix}_scale.png"))
        _save(figure, paths[-1])
        plt.close(figure)
    return paths
