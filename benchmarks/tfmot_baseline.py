"""Starts `tfmot_worker.py` in a subprocess with `TF_USE_LEGACY_KERAS=1`."""

import json
import os

import _common

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfmot_worker.py")


def run_tfmot(spec, folder, name, timeout=3600):
    """Runs the TFMOT worker on `spec` (without `"out"`), with its files in
    `folder`; returns its JSON result. Raises RuntimeError with the worker's
    output if it fails."""
    spec_path = os.path.join(folder, f"{name}_spec.json")
    out_path = os.path.join(folder, f"{name}_out.json")
    _common.write_json(spec_path, {**spec, "out": out_path})
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    _common.run_python([WORKER, spec_path], env, "The TFMOT worker", timeout)
    with open(out_path) as f:
        return json.load(f)
