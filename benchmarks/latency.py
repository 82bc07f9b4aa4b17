"""Section 4, latency: LiteRT (XNNPACK and builtin kernels) and TFLite Micro.

Three int8 models of the accuracy section: the dense CNN, the `local` model at
80% (unstructured), and the `channel` model at 50% (stripped with
`shrink=True`: the channels are gone). Each file runs batch 1, one thread.
Every configuration is timed in interleaved rounds (a round invokes it enough
times for about 50 ms); the figure is the median over rounds of the mean
invoke time. TFLite Micro arenas come from `export.min_arena_bytes`.
"""

import _common
import numpy as np

from keras_pruning import export

MODELS = {"dense": "dense", "unstructured_80": ("local", 0.8)}
CHANNEL = ("channel", 0.5)


def _quantized(sample, details):
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return sample.astype(dtype)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(sample / scale + zero_point), info.min, info.max).astype(
        dtype
    )


def litert_invoke(data, sample, xnnpack):
    """A zero-argument callable that invokes `data` in LiteRT on `sample`."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = (
        {}
        if xnnpack
        else {
            "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        }
    )
    interpreter = Interpreter(model_content=data, num_threads=1, **kwargs)
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], [1, *details["shape"][1:]])
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], _quantized(sample[None], details))
    interpreter.invoke()
    return interpreter.invoke


def micro_invoke(data, sample):
    """A zero-argument callable that invokes `data` in TFLite Micro."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(data, arena_size=1 << 21)
    details = interpreter.get_input_details(0)
    params = details["quantization_parameters"]
    quantization = {
        "dtype": details["dtype"],
        "quantization": (params["scales"][0], params["zero_points"][0]),
    }
    interpreter.set_input(_quantized(sample[None], quantization), 0)
    interpreter.invoke()
    return interpreter.invoke


def _batched(invoke, target_seconds=0.05):
    """`invoke` repeated enough times for about `target_seconds`, and the count."""
    times = _common.interleaved({"one": invoke}, repeats=3, warmup=1)["one"]
    count = max(1, int(target_seconds / max(min(times), 1e-6)))

    def run():
        for _ in range(count):
            invoke()

    return run, count


def run(models, files, channel_files, sample, repeats):
    """`files` maps a model name to its size-section files; returns the
    result dict."""
    configurations, errors, counts = {}, {}, {}
    all_files = {**files, "channel_50": channel_files}
    for model, named in all_files.items():
        plan = {
            "litert_xnnpack": ("int8", "xnnpack"),
            "litert_builtin": ("int8", "builtin"),
            "tflm": ("micro", "micro"),
        }
        if model == "unstructured_80":
            plan["litert_builtin_sparse_file"] = ("int8_sparse", "builtin")
            plan["litert_xnnpack_sparse_file"] = ("int8_sparse", "xnnpack")
            plan["tflm_compressed_file"] = ("micro_compressed", "micro")
        for runtime, (file, engine) in plan.items():
            key = f"{model}/{runtime}"
            try:
                if engine == "micro":
                    invoke = micro_invoke(named[file], sample)
                else:
                    invoke = litert_invoke(named[file], sample, engine == "xnnpack")
            except Exception as error:  # XNNPACK refuses random-sparse int8
                errors[key] = f"{type(error).__name__}: {str(error)[:200]}"
                continue
            configurations[key], counts[key] = _batched(invoke)
    times = _common.interleaved(configurations, repeats)
    invoke_ms = {
        key: 1000 * _common.median(values) / counts[key]
        for key, values in times.items()
    }
    arena = {}
    for model, named in all_files.items():
        arena[model] = export.min_arena_bytes(named["micro"])
        if model == "unstructured_80":
            arena[f"{model}/compressed_file"] = export.min_arena_bytes(
                named["micro_compressed"]
            )
    speedup = {}
    for key, ms in invoke_ms.items():
        model, runtime = key.split("/", 1)
        base = runtime.removesuffix("_sparse_file").removesuffix("_compressed_file")
        if model != "dense" and f"dense/{base}" in invoke_ms:
            speedup[key] = invoke_ms[f"dense/{base}"] / ms
    return {
        "models": {
            "dense": "the dense CNN",
            "unstructured_80": "local magnitude pruning at 80%",
            "channel_50": "channel pruning at 50%, shrunk",
        },
        "parameters": {
            name: int(m.count_params())
            for name, m in (
                ("dense", models["dense"]),
                ("unstructured_80", models[MODELS["unstructured_80"]]),
                ("channel_50", models[CHANNEL]),
            )
        },
        "repeats": repeats,
        "invoke_ms": invoke_ms,
        "speedup_vs_dense": speedup,
        "tflm_arena_bytes": arena,
        "errors": errors,
    }
