"""``tensorcas.recording_backend``: record every graph ``torch.compile`` runs.

Wraps a ``torch.compile`` backend.  Each graph Dynamo hands to it is numbered in compile order
and described once (its code, its placeholders, the imports the code needs) under
``PREFIX/graphs/N``; each call of the compiled graph records::

    PREFIX/graphN/attr/TARGET             tensors the graph holds as attributes (once, at compile)
    PREFIX/graphN/callC/input.I           the I-th graph input (ints and floats as 0-d tensors)
    PREFIX/graphN/callC/node/NODE         with nodes=True: every intermediate node, run eagerly
    PREFIX/graphN/callC/output.I          the I-th graph output

The same model compiled with two backends gets the same graphs from Dynamo, so the recordings of
an eager-backend run and an Inductor run line up graph by graph; ``nodes=True`` (with the
``"eager"`` backend) runs each graph node by node through ``torch.fx.Interpreter`` and records
every node, so two such runs (two machines, two versions) line up node by node.
"""

from __future__ import annotations

import importlib
import itertools
import math
import threading
import weakref
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

import torch

from ..errors import RecordingError
from ..store import Location
from .log import GRAPHS, VERSION, RecordingLog

GRAPH_FORMAT = "tensorcas-graph"


class RecordingBackend:
    """A ``torch.compile`` backend that records each compiled graph's inputs and outputs.

    Use it as a context manager, or call :meth:`close` when the run is over (it writes the
    index and waits for every background write).  It is also closed when collected or at exit.
    """

    def __init__(
        self,
        backend: str | Callable[..., Any],
        loc: Location,
        prefix: str,
        *,
        nodes: bool = False,
        background: bool = True,
    ) -> None:
        if nodes and backend != "eager":
            raise RecordingError(
                f"nodes=True runs each graph eagerly, node by node; pass backend='eager' (not {backend!r}) "
                "and compare the recording with a compiled run's graph inputs and outputs"
            )
        self.backend = backend
        self.nodes = nodes
        self.log = RecordingLog(loc, prefix, background=background)
        self.prefix = self.log.prefix
        self._graphs = itertools.count()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self.log.close)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        with self._lock:
            g = next(self._graphs)
        self._describe(g, gm)
        if self.nodes:
            compiled: Callable[..., Any] = _node_runner(self, g, gm)
        else:
            from torch._dynamo.backends.registry import lookup_backend

            inner = lookup_backend(self.backend) if isinstance(self.backend, str) else self.backend
            compiled = inner(gm, example_inputs)
        calls = itertools.count()

        def run(*args: Any) -> Any:
            c = next(calls)
            base = f"graph{g}/call{c}"
            for i, value in enumerate(args):
                tensor = _as_tensor(value)
                if tensor is not None:
                    self.log.write(f"{base}/input.{i}", tensor, "input", c)
            out = compiled(*args)
            for i, value in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(value, torch.Tensor):
                    self.log.write(f"{base}/output.{i}", value, "output", c)
            return out

        return run

    def _describe(self, g: int, gm: torch.fx.GraphModule) -> None:
        """Write graph ``g``'s code and what a script needs to run it again."""
        placeholders = []
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                example = node.meta.get("example_value", node.meta.get("val"))
                kind = "tensor"
                if isinstance(example, (bool, torch.SymBool)):
                    kind = "bool"
                elif isinstance(example, (int, torch.SymInt)):
                    kind = "int"
                elif isinstance(example, (float, torch.SymFloat)):
                    kind = "float"
                placeholders.append({"name": node.name, "kind": kind})
        attrs = []
        for node in gm.graph.nodes:
            if node.op == "get_attr" and isinstance(node.target, str):
                value = _get_attr(gm, node.target)
                if isinstance(value, torch.Tensor) and node.target not in attrs:
                    attrs.append(node.target)
                    self.log.write(f"graph{g}/attr/{node.target}", value, "param", 0)
        code = gm.graph.python_code(root_module="self")
        imports, missing = _imports(code.globals)
        self.log.write_document(
            f"{GRAPHS}/{g}",
            {
                "format": GRAPH_FORMAT,
                "version": VERSION,
                "graph": g,
                "backend": self.backend if isinstance(self.backend, str) else repr(self.backend),
                "code": code.src,
                "imports": imports,
                "missing_imports": missing,
                "placeholders": placeholders,
                "attrs": attrs,
            },
        )

    def flush(self) -> None:
        """Write the index of what was recorded so far and wait for pending writes."""
        self.log.write_index()
        self.log.writer.flush()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def recording_backend(
    backend: str | Callable[..., Any],
    loc: Location,
    prefix: str,
    *,
    nodes: bool = False,
    background: bool = True,
) -> RecordingBackend:
    """A ``torch.compile`` backend that compiles with ``backend`` and records every graph's
    inputs and outputs under ``prefix`` in the store at ``loc``.

    ``torch.compile(model, backend=tensorcas.recording_backend("inductor", "dumps", "run-b"))``.
    With ``nodes=True`` (and ``backend="eager"``) every intermediate node is recorded too.
    """
    return RecordingBackend(backend, loc, prefix, nodes=nodes, background=background)


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, bool):
        return torch.tensor(value)
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64)
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64)
    return None


def _get_attr(gm: torch.nn.Module, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


def _node_runner(owner: RecordingBackend, g: int, gm: torch.fx.GraphModule) -> Callable[..., Any]:
    calls = itertools.count()

    class NodeRecorder(torch.fx.Interpreter):
        def __init__(self, c: int) -> None:
            super().__init__(gm)
            self.c = c

        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.op not in ("placeholder", "output"):
                base = f"graph{g}/call{self.c}/node/{n.name}"
                if isinstance(result, torch.Tensor):
                    owner.log.write(base, result, "node", self.c)
                elif isinstance(result, (tuple, list)):
                    for i, item in enumerate(result):
                        if isinstance(item, torch.Tensor):
                            owner.log.write(f"{base}.{i}", item, "node", self.c)
            return result

    def run(*args: Any) -> Any:
        return NodeRecorder(next(calls)).run(*args)

    return run


def _imports(namespace: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Import lines that rebuild the globals a graph's code uses, and the names that cannot be."""
    lines: list[str] = []
    missing: list[str] = []
    for name, value in sorted(namespace.items()):
        if name == "__builtins__":
            continue
        if isinstance(value, ModuleType):
            lines.append(
                f"import {value.__name__}"
                if value.__name__ == name
                else f"import {value.__name__} as {name}"
            )
        elif (
            isinstance(value, float)
            and (math.isinf(value) or math.isnan(value))
            and name in ("inf", "nan")
        ):
            lines.append(f"from math import {name}")
        elif value is type(None) and name == "NoneType":
            lines.append("NoneType = type(None)")
        elif _importable(value):
            lines.append(f"import {value.__module__}")
            lines.append(f"{name} = {value.__module__}.{value.__qualname__}")
        else:
            missing.append(name)
    return list(dict.fromkeys(lines)), missing


def _importable(value: Any) -> bool:
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return False
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is value
