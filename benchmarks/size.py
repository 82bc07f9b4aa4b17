"""Section 3, file size against the information floor.

For the dense CNN and the `local` models of the accuracy section at each
sparsity, the bytes of: the int8 LiteRT file (dense encoding), its gzip
(level 9), the LiteRT sparse file (`sparse=True`), the TFLite Micro file and
its `compress_for_micro` twin, and the floor `nnz*8 + n*H(s)` bits of the
prunable kernels (`_common.floor_bytes`). Ratios are file / floor.
"""

import gzip

import _common

import keras_pruning as kp
from keras_pruning import export

FILES = ("int8", "int8_gzip", "int8_sparse", "micro", "micro_compressed")


def files_of(model, calibration):
    """The int8 files of `model`, as a dict name -> bytes, and the report of
    `compress_for_micro` on its micro file."""
    int8 = export.to_tflite(model, quantize="int8", representative_data=calibration)
    sparse = export.to_tflite(
        model, quantize="int8", representative_data=calibration, sparse=True
    )
    micro = export.to_tflite(
        model, quantize="int8", representative_data=calibration, target="micro"
    )
    compressed, compression = export.compress_for_micro(micro)
    return {
        "int8": int8,
        "int8_gzip": gzip.compress(int8, compresslevel=9, mtime=0),
        "int8_sparse": sparse,
        "micro": micro,
        "micro_compressed": compressed,
    }, compression


def run(models, sparsities, calibration):
    """Returns `(result, files)`: `files[s]` holds the bytes for sparsity
    `s` (0.0 is the dense model), for the latency section."""
    rows, files = {}, {}
    for s in (0.0, *sparsities):
        model = models["dense"] if s == 0.0 else models[("local", s)]
        report = kp.sparsity_report(model)
        floor = _common.floor_bytes([(r.size, r.nonzeros) for r in report])
        files[s], compression = files_of(model, calibration)
        sizes = {name: len(data) for name, data in files[s].items()}
        nonzeros, total = (
            sum(r.nonzeros for r in report),
            sum(r.size for r in report),
        )
        # The kernels DECODE encodes (mask, kept values, header) and the
        # ones left dense (1 byte per weight): the rest of the file is
        # biases, quantization parameters and the graph.
        kernel_bytes = sum(t.bytes_after for t in compression.tensors) + total
        kernel_bytes -= sum(t.bytes_before for t in compression.tensors)
        rows[str(s)] = {
            "kernel_sparsity": 1 - nonzeros / total,
            "kernel_weights": total,
            "kernel_nonzeros": nonzeros,
            "floor_bytes": floor,
            "bytes": sizes,
            "ratio_to_floor": {name: size / floor for name, size in sizes.items()},
            # What the compressed micro file spends beyond the floor: a 1-bit
            # mask costs n/8 bytes where the floor counts n*H(s)/8, and the
            # file holds more than kernels.
            "mask_bytes_1bit": sum((r.size + 7) // 8 for r in report),
            "non_kernel_bytes": sizes["micro_compressed"] - kernel_bytes,
        }
    return {
        "method": "local (the accuracy section's models)",
        "floor": "sum over prunable kernels of nnz*8 + n*H(s) bits, in bytes",
        "sparsities": rows,
    }, files
