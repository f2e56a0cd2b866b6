"""``tensorcas.record``: write the tensors of an eager model run as it runs.

Names come from the module tree, so two runs of the same code produce the same names and can be
compared name by name::

    PREFIX/step0/encoder.layer.3.attn/input.0        first positional tensor argument
    PREFIX/step0/encoder.layer.3.attn/input.mask     keyword argument ``mask``
    PREFIX/step0/encoder.layer.3.attn/output         a single tensor returned
    PREFIX/step0/encoder.layer.3.attn/output.1       the second tensor of a returned tuple
    PREFIX/step0/encoder.layer.3.attn@1/output       the module's second call in this step
    PREFIX/step0/encoder.layer.3.attn/op2.aten.mm.default/output   third aten op run directly in it
    PREFIX/step0/params/encoder.layer.3.attn.in_proj_weight        parameters (``save_parameters``)
    PREFIX/step0/grads/encoder.layer.3.attn.in_proj_weight         gradients as they are accumulated

The root module is called ``model``.  ``step()`` ends a step: calls and ops are counted per step,
so step 5 of one run pairs with step 5 of another even if the runs recorded different things
before it.
"""

from __future__ import annotations

import fnmatch
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten_with_path

from ..errors import RecordingError
from ..store import Location
from .log import RecordingLog, check_prefix

StepFilter = Iterable[int] | Callable[[int], bool] | None
ROOT = "model"


class Recorder:
    """Records module inputs and outputs (and optionally aten op outputs, parameters and
    gradients) of eager code into a store.  Made by :func:`record`; see there for the options."""

    def __init__(
        self,
        loc: Location,
        prefix: str,
        model: torch.nn.Module | None = None,
        *,
        modules: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        inputs: bool = True,
        outputs: bool = True,
        ops: bool = False,
        op_names: Sequence[str] | None = None,
        steps: StepFilter = None,
        parameters: bool = False,
        gradients: bool = False,
        aliases: bool = True,
        background: bool = True,
        max_pending_bytes: int = 1 << 30,
    ) -> None:
        if isinstance(modules, str) or isinstance(exclude, str) or isinstance(op_names, str):
            raise RecordingError(
                "modules, exclude and op_names take a list of patterns, not one string"
            )
        if (parameters or gradients) and model is None:
            raise RecordingError(
                "parameters=True and gradients=True need the model: record(loc, prefix, model, ...)"
            )
        self.model = model
        self.modules = tuple(modules)
        self.exclude = tuple(exclude)
        self.inputs = inputs
        self.outputs = outputs
        self.op_names = None if op_names is None else tuple(op_names)
        self.parameters = parameters
        self.gradients = gradients
        self.aliases = aliases
        self._steps = _step_filter(steps)
        self.prefix = check_prefix(prefix)
        self._loc = loc
        self._writer_options = {"background": background, "max_pending_bytes": max_pending_bytes}
        self._log: RecordingLog | None = None
        self._step = 0
        self._calls: dict[str, int] = {}
        self._ops: dict[str, int] = {}
        #: id(tensor) -> (weak reference, version counter, key) of tensors recorded in this step
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, str]] = {}
        self._local = threading.local()  # per thread: module scope stack and re-entry guard
        self._handles: list[Any] = []
        self._mode = _OpRecorder(self) if ops else None
        self._open = False
        self._root = ROOT
        if model is not None:
            names = {name for name, _ in model.named_modules()}
            while self._root in names:  # a child named "model" keeps its name; the root yields
                self._root = "_" + self._root

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def log(self) -> RecordingLog:
        """Where the tensors go; ``log.skipped`` lists those that could not be stored."""
        if self._log is None:
            raise RecordingError(
                f"the recording {self.prefix!r} has not started: use it in a with block or call start()"
            )
        return self._log

    def start(self) -> Recorder:
        """Attach the hooks and start recording (what entering the ``with`` block does)."""
        if self._log is not None:
            raise RecordingError(
                f"the recording {self.prefix!r} was started before; a Recorder records one run, "
                "make a new one with tensorcas.record()"
            )
        self._log = RecordingLog(self._loc, self.prefix, **self._writer_options)  # type: ignore[arg-type]
        self._open = True
        if self.model is not None:
            self._attach(self.model)
        if self._mode is not None:
            self._mode.__enter__()
        self._begin_step()
        return self

    def close(self) -> None:
        """Stop recording, write the index and wait until every tensor is stored."""
        if not self._open:
            return
        self._open = False
        try:
            if self._mode is not None:
                self._mode.__exit__(None, None, None)
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self.log.close()
        if self.log.written == 0:
            warnings.warn(
                f"nothing was recorded under {self.prefix!r}: check the modules and steps filters; "
                "code run by torch.compile is recorded with tensorcas.recording_backend, not record()",
                stacklevel=2,
            )

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- steps and explicit saves ----------------------------------------------------------------

    @property
    def step_index(self) -> int:
        """The number of the current step (0 until ``step()`` is first called)."""
        return self._step

    @property
    def active(self) -> bool:
        """Whether the current step is recorded (the ``steps`` filter)."""
        return self._open and self._steps(self._step)

    def step(self) -> None:
        """End the current step: its index segment is written, and counting starts afresh."""
        self.log.write_index()
        self._step += 1
        self._calls.clear()
        self._ops.clear()
        self._seen.clear()
        self._begin_step()

    def _begin_step(self) -> None:
        if self.parameters and self.active:
            self.save_parameters()

    def save(self, key: str, tensor: torch.Tensor) -> None:
        """Record one tensor of your own as ``PREFIX/stepN/key`` (if this step is recorded)."""
        if self.active:
            self._write(f"step{self._step}/{key}", tensor, "tensor")

    def save_parameters(self, tag: str = "params", model: torch.nn.Module | None = None) -> None:
        """Record every parameter as ``PREFIX/stepN/TAG/NAME`` now (e.g. after the optimizer)."""
        self._save_named(
            tag, (model or self._need_model()).named_parameters(), "param", grads=False
        )

    def save_gradients(self, tag: str = "grads", model: torch.nn.Module | None = None) -> None:
        """Record every parameter's ``.grad`` as ``PREFIX/stepN/TAG/NAME`` now."""
        self._save_named(tag, (model or self._need_model()).named_parameters(), "grad", grads=True)

    def _save_named(
        self, tag: str, named: Iterable[tuple[str, torch.nn.Parameter]], kind: str, *, grads: bool
    ) -> None:
        if not self.active:
            return
        for name, param in named:
            tensor = param.grad if grads else param
            if tensor is not None:
                self._write(self._numbered(f"step{self._step}/{tag}/{name}"), tensor, kind)

    def _need_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RecordingError(
                "no model to take parameters from: pass it to record() or to this call"
            )
        return self.model

    # -- hooks -----------------------------------------------------------------------------------

    def _attach(self, model: torch.nn.Module) -> None:
        for name, module in model.named_modules():
            scope = name or self._root
            if not self._selected(scope):
                continue
            self._handles.append(
                module.register_forward_pre_hook(self._pre_hook(scope), with_kwargs=True)
            )
            self._handles.append(
                module.register_forward_hook(self._post_hook(), with_kwargs=True, always_call=True)
            )
        if self.gradients:
            for name, param in model.named_parameters():
                if param.requires_grad:
                    self._handles.append(
                        param.register_post_accumulate_grad_hook(self._grad_hook(name))
                    )

    def _selected(self, scope: str) -> bool:
        return any(fnmatch.fnmatchcase(scope, p) for p in self.modules) and not any(
            fnmatch.fnmatchcase(scope, p) for p in self.exclude
        )

    def _stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _pre_hook(self, scope: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if torch.compiler.is_compiling():
                return  # compiled regions are recorded by recording_backend
            call = self._numbered_scope(scope)
            self._stack().append(call)
            if self.inputs and self.active:
                self._write_tree(f"step{self._step}/{call}", "input", (args, kwargs))

        return hook

    def _post_hook(self) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if torch.compiler.is_compiling():
                return
            stack = self._stack()
            if not stack:
                return
            call = stack.pop()
            if self.outputs and self.active:
                self._write_tree(f"step{self._step}/{call}", "output", output)

        return hook

    def _grad_hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if self.active and param.grad is not None:
                self._write(self._numbered(f"step{self._step}/grads/{name}"), param.grad, "grad")

        return hook

    def _numbered_scope(self, scope: str) -> str:
        """``scope`` for its first call in this step, ``scope@k`` for call k after that."""
        k = self._calls.get(scope, 0)
        self._calls[scope] = k + 1
        return scope if k == 0 else f"{scope}@{k}"

    def _numbered(self, key: str) -> str:
        k = self._calls.get(key, 0)
        self._calls[key] = k + 1
        return key if k == 0 else f"{key}@{k}"

    def _write_tree(self, base: str, what: str, tree: Any) -> None:
        if what == "output" and isinstance(tree, torch.Tensor):
            self._write(f"{base}/output", tree, "output")
            return
        leaves, _ = tree_flatten_with_path(tree)
        for path, leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                parts = [_key_part(k) for k in path]
                if what == "input":
                    parts = parts[1:]  # drop the (args, kwargs) position
                self._write(f"{base}/{what}.{'.'.join(parts)}", leaf, what)

    def _write(self, key: str, tensor: torch.Tensor, kind: str) -> None:
        local = self._local
        if getattr(local, "busy", False):
            return
        local.busy = True  # the writer's own torch calls are not the model's ops
        try:
            if self.aliases and kind in _ALIASED:
                version = _version(tensor)
                seen = self._seen.get(id(tensor))
                if (
                    seen is not None
                    and seen[0]() is tensor
                    and version is not None
                    and seen[1] == version
                ):
                    self.log.alias(key, seen[2], kind, self._step)
                    return
                if self.log.write(key, tensor, kind, self._step) and version is not None:
                    self._seen[id(tensor)] = (weakref.ref(tensor), version, key)
                return
            self.log.write(key, tensor, kind, self._step)
        finally:
            local.busy = False

    # -- aten ops --------------------------------------------------------------------------------

    def _op(self, func: Any, out: Any) -> None:
        if getattr(self._local, "busy", False) or not self.active or torch.compiler.is_compiling():
            return
        op = str(func)
        if self.op_names is not None and not any(
            fnmatch.fnmatchcase(op, p) or fnmatch.fnmatchcase(func.__name__.split(".")[0], p)
            for p in self.op_names
        ):
            return
        stack = self._stack()
        scope = stack[-1] if stack else self._root
        k = self._ops.get(scope, 0)
        self._ops[scope] = k + 1
        base = f"step{self._step}/{scope}/op{k}.{op}"
        if isinstance(out, torch.Tensor):
            self._write(f"{base}/output", out, "op")
            return
        leaves, _ = tree_flatten_with_path(out)
        for path, leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                self._write(f"{base}/output.{'.'.join(_key_part(p) for p in path)}", leaf, "op")


class _OpRecorder(TorchDispatchMode):
    """Sees every aten op run on this thread while recording and hands its outputs over."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.recorder._op(func, out)
        return out


#: Kinds of records that may name a tensor recorded earlier in the step.
_ALIASED = frozenset({"input", "output", "op", "tensor"})


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by every in-place change autograd sees), or None
    for tensors without one (inference tensors)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None


def _key_part(key: Any) -> str:
    for attr in ("idx", "key", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr)).replace("/", "_") or "_"
    return str(key).replace("/", "_")


def _step_filter(steps: StepFilter) -> Callable[[int], bool]:
    if steps is None:
        return lambda step: True
    if callable(steps):
        return steps
    chosen = frozenset(int(s) for s in steps)
    return lambda step: step in chosen


def record(
    loc: Location,
    prefix: str,
    model: torch.nn.Module | None = None,
    *,
    modules: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    inputs: bool = True,
    outputs: bool = True,
    ops: bool = False,
    op_names: Sequence[str] | None = None,
    steps: StepFilter = None,
    parameters: bool = False,
    gradients: bool = False,
    aliases: bool = True,
    background: bool = True,
    max_pending_bytes: int = 1 << 30,
) -> Recorder:
    """Record a run of ``model`` into the store at ``loc`` under ``prefix``; use as a context.

    ``with tensorcas.record("dumps", "run-a", model) as rec: model(x)`` writes every module's
    inputs and outputs under ``run-a/step0/...`` (see :mod:`tensorcas.recording.recorder` for the
    names).  Writes deduplicate and run in the writer's background mode; leaving the block waits
    for them.

    Args:
        modules, exclude: ``fnmatch`` patterns of module names (``"encoder.layer.*"``; the root is
            ``model``): only modules matching ``modules`` and not ``exclude`` are recorded.
        inputs, outputs: record modules' inputs, outputs.
        ops: also record every aten op's outputs (a ``TorchDispatchMode`` on this thread), named
            by the innermost module running and the op's position in it.
        op_names: ``fnmatch`` patterns (``"aten.mm.*"`` or ``"mm"``) of the ops to record.
        steps: which steps to record: step numbers (``range(10, 12)``) or a predicate.
        parameters: record every parameter at the start of each recorded step.
        gradients: record each gradient as backward accumulates it.
        aliases: a tensor recorded a second time in a step (the same tensor object, unchanged
            since: a module's input that was the previous module's output) is not stored again;
            the index names it as the same as its first name, and ``read_order`` and ``bisect``
            resolve it.  ``False`` stores every name.
        background, max_pending_bytes: passed to :class:`tensorcas.ContentStoreWriter`.
    """
    return Recorder(
        loc,
        prefix,
        model,
        modules=modules,
        exclude=exclude,
        inputs=inputs,
        outputs=outputs,
        ops=ops,
        op_names=op_names,
        steps=steps,
        parameters=parameters,
        gradients=gradients,
        aliases=aliases,
        background=background,
        max_pending_bytes=max_pending_bytes,
    )
