"""The error catalogue (docs/guides/errors.md): each entry's examples raise
the documented exception with a documented message, and every `raise` in the
library is covered by an entry."""

import ast
import builtins
import contextlib
import functools
import importlib.util
import io
import os
import pathlib
import re
import sys

import keras
import numpy as np
import pytest

import keras_pruning as kp
from keras_pruning import analysis, datasets, export, lottery, structured

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "guides" / "errors.md"
SOURCE = ROOT / "src" / "keras_pruning"
# Exceptions users see. `CompressionError` is internal to compress_for_micro,
# which skips the tensor it was raised for.
CATALOGUED = {
    "ValueError",
    "TypeError",
    "FileExistsError",
    "FileNotFoundError",
    "ImportError",
    "RuntimeError",
    "_UsageError",
}


def _template_regex(template):
    """`…` stands for any inserted text; the rest is literal."""
    return re.compile(".*?".join(re.escape(part) for part in template.split("…")))


def _entries():
    """`(heading, [message templates], [(exception, pattern, code)])` per `###`."""
    entries = []
    for section in PAGE.read_text(encoding="utf-8").split("\n### ")[1:]:
        heading = section.splitlines()[0]
        templates = [
            re.sub(r"^`+ ?| ?`+$", "", line.split("**Message:**", 1)[1].strip())
            for line in section.splitlines()
            if line.startswith("- **Message:**")
        ]
        examples = []
        for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
            first = block.splitlines()[0]
            match = re.fullmatch(r"# raises (\w+): (.+)", first)
            assert match, f"{heading}: a block must start with '# raises X: ...'"
            examples.append((match[1], match[2], block))
        entries.append((heading, templates, examples))
    return entries


ENTRIES = _entries()


# --- the helpers the examples use -----------------------------------------------


class CliError(Exception):
    """The command line's one-line error (exit status 2)."""


def _cli(*argv):
    from keras_pruning.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        status = main(list(argv))
    if status == 2:
        raise CliError(stderr.getvalue().removeprefix("keras-pruning: error: "))
    return status


@contextlib.contextmanager
def _patched(obj, name, value):
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def _without(module):
    """Makes `module` look uninstalled: not importable, not found by find_spec."""
    find_spec = importlib.util.find_spec
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if k == module}
    sys.modules[module] = None
    try:
        with _patched(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == module else find_spec(name, *a),
        ):
            yield
    finally:
        del sys.modules[module]
        sys.modules.update(hidden)


def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(4)],
        name="mlp",
    )


@functools.cache
def _tflite():
    return export.to_tflite(_mlp())


def _namespace(tmp_path):
    return {
        "keras": keras,
        "np": np,
        "kp": kp,
        "export": export,
        "analysis": analysis,
        "datasets": datasets,
        "lottery": lottery,
        "structured": structured,
        "mlp": _mlp,
        "pruned": lambda: kp.prune_low_magnitude(_mlp()),
        "tflite": _tflite,
        "tmp": tmp_path,
        "cli": _cli,
        "CliError": CliError,
        "patched": _patched,
        "without": _without,
    }


EXAMPLES = [
    (heading, number, example)
    for heading, _, examples in ENTRIES
    for number, example in enumerate(examples, 1)
]


def test_every_entry_has_messages_and_an_example():
    assert len(ENTRIES) >= 15
    for heading, templates, examples in ENTRIES:
        assert templates, f"{heading}: no **Message:** line"
        assert examples, f"{heading}: no example that raises it"


@pytest.mark.parametrize(
    ("heading", "number", "example"),
    EXAMPLES,
    ids=[f"{heading}-{number}" for heading, number, _ in EXAMPLES],
)
def test_example_raises_the_documented_error(heading, number, example, tmp_path):
    exception, pattern, code = example
    templates = next(t for h, t, _ in ENTRIES if h == heading)
    namespace = _namespace(tmp_path)
    expected = namespace.get(exception) or getattr(builtins, exception)
    with pytest.raises(expected) as raised:
        exec(compile(code, f"errors.md: {heading}", "exec"), namespace)
    message = str(raised.value)
    assert re.search(pattern, message), message
    assert any(_template_regex(t).search(message) for t in templates), (
        f"no **Message:** line of {heading!r} matches: {message}"
    )


# --- coverage: every raise site matches an entry --------------------------------


def _skeletons(node, function, functions):
    """The message's fixed text, `…` for each inserted value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [
            "".join(
                v.value if isinstance(v, ast.Constant) else "…" for v in node.values
            )
        ]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [
            left + right
            for left in _skeletons(node.left, function, functions)
            for right in _skeletons(node.right, function, functions)
        ]
    if isinstance(node, ast.Name) and function is not None:
        for assign in ast.walk(function):
            if isinstance(assign, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == node.id for t in assign.targets
            ):
                return _skeletons(assign.value, function, functions)
    if isinstance(node, ast.Call):
        helper = functions.get(_called_name(node))
        if helper is not None:  # a function that builds the message or error
            found = []
            for ret in ast.walk(helper):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    value = ret.value
                    if isinstance(value, ast.Call) and value.args:
                        value = value.args[0]
                    found += _skeletons(value, helper, functions)
            return found
    return ["…"]


def _called_name(call):
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _raise_sites():
    """`(where, exception, skeleton)` for every catalogued `raise` in src/."""
    trees = {path: ast.parse(path.read_text()) for path in SOURCE.rglob("*.py")}
    functions = {
        node.name: node
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    for path, tree in sorted(trees.items()):
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            function = node
            while function in parents and not isinstance(function, ast.FunctionDef):
                function = parents[function]
            name = _called_name(node.exc)
            if name in functions:  # `raise _error_helper(...)`
                skeletons = _skeletons(node.exc, function, functions)
            elif name in CATALOGUED and node.exc.args:
                skeletons = _skeletons(node.exc.args[0], function, functions)
            else:
                continue
            where = f"{path.relative_to(SOURCE)}:{node.lineno}"
            for skeleton in skeletons:
                if skeleton.strip("… ") != "":  # a re-raised message
                    yield where, name, skeleton


def test_every_raise_in_the_library_is_catalogued():
    templates = [_template_regex(t) for _, ts, _ in ENTRIES for t in ts]
    sites = list(_raise_sites())
    assert len(sites) > 150
    missing = [
        f"{where} {name}: {skeleton}"
        for where, name, skeleton in sites
        if not any(t.match(skeleton) for t in templates)
    ]
    assert not missing, "add to docs/guides/errors.md:\n" + "\n".join(missing)


def test_coverage_check_catches_an_uncatalogued_message():
    templates = [_template_regex(t) for _, ts, _ in ENTRIES for t in ts]
    assert not any(t.match("Something new went wrong with …") for t in templates)
    assert any(t.match("`sparsity` must be a float. Received: …") for t in templates)


def test_page_is_in_the_nav():
    assert "guides/errors.md" in (ROOT / "mkdocs.yml").read_text()
    assert os.path.isfile(PAGE)
