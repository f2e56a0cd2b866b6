"""Turn one recorded graph call into a standalone script.

The script holds the graph's code (as ``torch.compile`` traced it) and loads the call's recorded
inputs, the graph's attribute tensors and the recorded outputs with
``torch.ops.tensorcas.load_tensor`` from the store; it runs the graph (eagerly or compiled with a
backend named on its command line) and compares what it computes with the recorded outputs.  It
needs tensorcas and the store, not the model's code, so the diverging piece can be handed over
alone.

The code in the script comes from the store.  Making the script runs nothing, and the code is
checked to be one ``forward`` function plus import lines of the forms this module writes; still,
read a script made from a store you did not write before running it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

from ..errors import RecordingError, TensorNotFoundError
from ..reader import ContentStoreReader
from ..store import Location
from .compiled import GRAPH_FORMAT
from .log import GRAPHS, join, read_document

_IMPORT_RE = re.compile(
    r"(import [A-Za-z_][\w.]*( as [A-Za-z_]\w*)?"
    r"|from math import (inf|nan)"
    r"|NoneType = type\(None\)"
    r"|[A-Za-z_]\w* = [A-Za-z_][\w.]*)\Z"
)
_IDENT_RE = re.compile(r"[A-Za-z_]\w*\Z")
_TARGET_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def make_repro(
    loc: Location, prefix: str, graph: int = 0, call: int = 0, *, store: str | None = None
) -> str:
    """The text of a Python script that replays call ``call`` of graph ``graph`` recorded under
    ``prefix``.  ``store`` is the path the script loads from by default (``loc`` if a path)."""
    reader = ContentStoreReader(loc, cache=False)
    prefix = prefix.rstrip("/")
    meta_name = join(prefix, f"{GRAPHS}/{graph}")
    if meta_name not in reader:
        raise RecordingError(
            f"no graph {graph} is recorded under {prefix!r} in {reader.location} ({meta_name!r} is missing); "
            f"'tensorcas ls {reader.location} {prefix}/{GRAPHS}/' lists the recorded graphs"
        )
    meta = read_document(reader, meta_name, "graph description", GRAPH_FORMAT)
    code, imports, placeholders, attrs = _checked(meta, meta_name)
    base = join(prefix, f"graph{graph}/call{call}")

    def spec(name: str) -> tuple[str, list[int], list[int], str]:
        try:
            r = reader.read_tensor_metadata(name)
        except TensorNotFoundError:
            raise RecordingError(
                f"{name!r} is not in {reader.location}: graph {graph} call {call} was not recorded whole "
                f"(was the recording closed? is the call number right?)"
            ) from None
        return (name, list(r.shape), list(r.stride), r.dtype)

    inputs = [(*spec(f"{base}/input.{i}"), p["kind"]) for i, p in enumerate(placeholders)]
    outputs = []
    for name in reader.list_tensors(f"{base}/"):
        tail = name[len(base) + 1 :]
        if tail.startswith("output.") and tail[7:].isdigit():
            outputs.append((int(tail[7:]), *spec(name)))
    outputs.sort()
    attr_specs = [(target, *spec(join(prefix, f"graph{graph}/attr/{target}"))) for target in attrs]
    where = store if store is not None else reader.location
    return _TEMPLATE.format(
        graph=graph,
        call=call,
        prefix=prefix,
        store=where,
        imports="\n".join(imports),
        forward=textwrap.indent(code.strip("\n"), "    "),
        inputs=_rows(inputs),
        outputs=_rows(outputs),
        attrs=_rows(attr_specs),
    )


def _rows(rows: list[tuple[Any, ...]]) -> str:
    return "".join(f"    {row!r},\n" for row in rows)


def _checked(
    meta: dict[str, Any], where: str
) -> tuple[str, list[str], list[dict[str, str]], list[str]]:
    """The description's parts, checked to be what a recording writes and nothing else."""
    code, imports = meta.get("code"), meta.get("imports")
    placeholders, attrs, missing = (
        meta.get("placeholders"),
        meta.get("attrs"),
        meta.get("missing_imports"),
    )
    if not isinstance(code, str) or not isinstance(imports, list) or not isinstance(attrs, list):
        raise RecordingError(f"graph description {where!r} lacks its code, imports or attributes")
    if missing:
        raise RecordingError(
            f"graph description {where!r}: the graph's code uses {missing!r}, which cannot be imported by "
            "name, so no standalone script can run it"
        )
    for line in imports:
        if not isinstance(line, str) or not _IMPORT_RE.match(line):
            raise RecordingError(
                f"graph description {where!r} holds an unexpected import line: {str(line)[:100]!r}"
            )
    if not isinstance(placeholders, list) or not all(
        isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and _IDENT_RE.match(p["name"])
        and p.get("kind") in ("tensor", "int", "float", "bool")
        for p in placeholders
    ):
        raise RecordingError(f"graph description {where!r} holds malformed placeholders")
    if not all(isinstance(a, str) and _TARGET_RE.match(a) for a in attrs):
        raise RecordingError(f"graph description {where!r} holds a malformed attribute name")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise RecordingError(
            f"graph description {where!r}: its code does not parse: {exc}"
        ) from None
    if (
        len(tree.body) != 1
        or not isinstance(tree.body[0], ast.FunctionDef)
        or tree.body[0].name != "forward"
    ):
        raise RecordingError(f"graph description {where!r}: its code is not one 'forward' function")
    return code, imports, placeholders, attrs


_TEMPLATE = '''\
"""Replays one graph call recorded by tensorcas.recording_backend (see RECORDED below).

Loads the recorded inputs with torch.ops.tensorcas.load_tensor, runs the graph and compares its
outputs with the recorded outputs.  Exit status 0 when every output is within tolerance.

    python THIS_SCRIPT [--store PATH] [--backend eager|aot_eager|inductor] [--rtol R] [--atol A]
"""

import argparse
import sys

import torch

import tensorcas

{imports}

RECORDED = {{"store": {store!r}, "prefix": {prefix!r}, "graph": {graph!r}, "call": {call!r}}}


class Repro(torch.nn.Module):
{forward}


# (name in the store, size, stride, dtype, kind)
INPUTS = [
{inputs}]
# (output position, name in the store, size, stride, dtype)
OUTPUTS = [
{outputs}]
# (attribute, name in the store, size, stride, dtype)
ATTRS = [
{attrs}]


def load(name, size, stride, dtype):
    return torch.ops.tensorcas.load_tensor(name, size, stride, dtype=getattr(torch, dtype), device="cpu")


def set_attr(module, target, value):
    *path, last = target.split(".")
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, torch.nn.Module())
        module = getattr(module, part)
    module.register_buffer(last, value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=RECORDED["store"])
    parser.add_argument("--backend", default="eager", help="eager (no compile) or a torch.compile backend")
    parser.add_argument("--rtol", type=float, default=None)
    parser.add_argument("--atol", type=float, default=None)
    args = parser.parse_args()
    if (args.rtol is None) != (args.atol is None):
        parser.error("give --rtol and --atol together")
    with tensorcas.load_tensor_reader(args.store):
        model = Repro()
        for target, name, size, stride, dtype in ATTRS:
            set_attr(model, target, load(name, size, stride, dtype))
        inputs = []
        for name, size, stride, dtype, kind in INPUTS:
            value = load(name, size, stride, dtype)
            inputs.append(value if kind == "tensor" else value.item())
        expected = [(i, name, load(name, size, stride, dtype)) for i, name, size, stride, dtype in OUTPUTS]
    run = model if args.backend == "eager" else torch.compile(model, backend=args.backend)
    with torch.no_grad():
        out = run(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    ok = True
    for i, name, want in expected:
        got = out[i]
        try:
            torch.testing.assert_close(got, want, rtol=args.rtol, atol=args.atol, equal_nan=True)
            err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
            print(f"output {{i}}: matches {{name}} (max abs err {{err:.3g}})")
        except AssertionError as exc:
            ok = False
            print(f"output {{i}}: differs from {{name}}:\\n{{exc}}")
    print("reproduced: every output matches the recording" if ok else "outputs differ from the recording")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
'''
