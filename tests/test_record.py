"""Recording model runs and finding where two runs diverge (eager, torch.compile, plots, repro)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, RecordingError
from tensorcas.cli import cli
from tensorcas.recording import read_order
from tensorcas.recording.log import bytes_tensor

SRC = str(Path(__file__).resolve().parent.parent / "src")


class Block(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, 2 * dim)
        self.fc2 = torch.nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, 2, d // 2).unbind(2)
        att = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))


class TinyTransformer(torch.nn.Module):
    def __init__(self, vocab: int = 32, dim: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.blocks = torch.nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def make_model() -> TinyTransformer:
    torch.manual_seed(0)
    return TinyTransformer()


TOKENS = torch.arange(12).reshape(2, 6) % 32


def perturb(module: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Add 1e-2 to ``module``'s output: the injected difference of run B."""
    return module.register_forward_hook(lambda mod, args, out: out + 1e-2)


def run_eager(loc: Path, prefix: str, *, perturbed: str | None = None, **options: object) -> None:
    model = make_model()
    handle = perturb(model.get_submodule(perturbed)) if perturbed else None
    with tensorcas.record(loc, prefix, model, **options) as rec:  # type: ignore[arg-type]
        model(TOKENS).sum().backward()
        rec.step()
        model(TOKENS)
    if handle is not None:
        handle.remove()


def tensorcas_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# -- eager recording ------------------------------------------------------------------------------


def test_names_come_from_the_module_tree_in_execution_order(tmp_path):
    run_eager(tmp_path, "run-a")
    order = [e.key for e in read_order(ContentStoreReader(tmp_path), "run-a")]
    assert order[0] == "step0/model/input.0"
    for key in (
        "step0/blocks.1.fc1/output",
        "step0/blocks.0/input.0",
        "step0/head/output",
        "step1/model/output",
    ):
        assert key in order
    # a module's input comes before its children, its output after them; step 1 after step 0
    assert order.index("step0/blocks.0/input.0") < order.index("step0/blocks.0.qkv/output")
    assert order.index("step0/blocks.0.fc2/output") < order.index("step0/blocks.0/output")
    assert order.index("step0/blocks.1/output") < order.index("step0/head/input.0")
    assert order.index("step0/model/output") < order.index("step1/model/input.0")
    reader = ContentStoreReader(tmp_path)
    stored = reader.read_tensor("run-a/step0/blocks.1.fc1/output")
    assert stored.shape == (2, 6, 32)
    assert not any(name.startswith("run-a/step0/params") for name in reader.list_tensors("run-a/"))


def test_filters_choose_modules_steps_and_kinds(tmp_path):
    run_eager(tmp_path, "f", modules=["blocks.*"], exclude=["*.norm*"], inputs=False, steps=[1])
    keys = [e.key for e in read_order(ContentStoreReader(tmp_path), "f")]
    assert keys, "nothing recorded"
    assert all(k.startswith("step1/blocks.") and k.endswith("/output") for k in keys), keys
    assert not any("norm" in k for k in keys)
    assert "step1/blocks.0.fc1/output" in keys


def test_parameters_and_gradients_in_backward_order(tmp_path):
    run_eager(tmp_path, "p", parameters=True, gradients=True, inputs=False, outputs=False)
    entries = read_order(ContentStoreReader(tmp_path), "p")
    kinds = [(e.key.split("/")[0], e.kind) for e in entries]
    params = [e.key for e in entries if e.kind == "param"]
    grads = [e.key for e in entries if e.kind == "grad"]
    assert "step0/params/blocks.0.fc1.weight" in params and "step1/params/head.bias" in params
    assert "step0/grads/head.weight" in grads
    # gradients arrive in backward order: the head's before the embedding's
    assert grads.index("step0/grads/head.weight") < grads.index("step0/grads/embed.weight")
    assert kinds.index(("step0", "grad")) > kinds.index(("step0", "param"))
    reader = ContentStoreReader(tmp_path)
    model = make_model()
    assert torch.equal(reader.read_tensor("p/step0/params/head.weight"), model.head.weight.detach())


def test_op_outputs_have_stable_names(tmp_path):
    run_eager(tmp_path, "x", ops=True, inputs=False)
    run_eager(tmp_path, "y", ops=True, inputs=False)
    reader = ContentStoreReader(tmp_path)
    x = [e.key for e in read_order(reader, "x")]
    y = [e.key for e in read_order(reader, "y")]
    assert x == y
    assert "step0/blocks.0.fc1/op2.aten.addmm.default/output" in x
    assert any(".aten.relu.default/output" in k for k in x)
    assert tensorcas.bisect(f"{tmp_path}:x", f"{tmp_path}:y").ok
    only_mm = tmp_path / "mm"
    run_eager(only_mm, "z", ops=True, inputs=False, outputs=False, op_names=["mm", "aten.addmm.*"])
    keys = [e.key for e in read_order(ContentStoreReader(only_mm), "z")]
    assert keys and all(".aten.mm." in k or ".aten.addmm." in k for k in keys), keys


# -- finding the divergence -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same model recorded twice, and once with blocks.1.fc1's output perturbed by 1e-2."""
    loc = tmp_path_factory.mktemp("runs")
    run_eager(loc, "a")
    run_eager(loc, "same")
    run_eager(loc, "b", perturbed="blocks.1.fc1")
    return loc


def test_identical_runs_report_no_divergence(two_runs):
    result = tensorcas.bisect(f"{two_runs}:a", f"{two_runs}:same")
    assert result.ok and result.first is None
    assert len(result.compared) == result.total > 50
    code, out = tensorcas_cli("bisect", f"{two_runs}:a", f"{two_runs}:same")
    assert code == 0, out
    assert out.startswith("no divergence")


def test_injected_difference_is_the_first_divergence(two_runs):
    result = tensorcas.bisect(f"{two_runs}:a", f"{two_runs}:b", context=4)
    first = result.first
    assert first is not None
    assert first.key == "step0/blocks.1.fc1/output"
    assert first.kind == "output" and first.status == "different"
    assert abs(first.max_abs_error - 1e-2) < 1e-4
    assert first.mismatched == first.numel == 2 * 6 * 32
    # everything before it was still close, and nothing before it is reported
    assert all(c.ok for c in result.compared[:-1])
    assert result.compared[-1] is first and first.position == len(result.compared) - 1
    assert [c.key for c in result.before] == [c.key for c in result.compared[-5:-1]]
    assert [c.key for c in result.inputs] == ["step0/blocks.1.fc1/input.0"] and result.inputs[0].ok
    # the replay snippet loads exactly the two diverging tensors
    scope: dict[str, object] = {}
    exec(result.replay_code(), scope)
    a, b = scope["a"], scope["b"]
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    torch.testing.assert_close(b - a, torch.full_like(a, 1e-2), rtol=0, atol=1e-5)


def test_bisect_command_reports_the_divergence(two_runs):
    code, out = tensorcas_cli("bisect", f"{two_runs}:a", f"{two_runs}:b", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["first_divergence"]["key"] == "step0/blocks.1.fc1/output"
    assert doc["replay"]["b"]["name"] == "b/step0/blocks.1.fc1/output"
    assert all(c["status"] != "different" for c in doc["before"])
    code, text = tensorcas_cli("bisect", f"{two_runs}:a", f"{two_runs}:b")
    assert code == 1
    assert text.startswith("first divergence: step0/blocks.1.fc1/output")
    assert "still close just before it:" in text and "load_tensor" in text
    # a loose enough tolerance accepts the perturbation
    code, text = tensorcas_cli(
        "bisect", f"{two_runs}:a", f"{two_runs}:b", "--tol", "float32=0,0.02"
    )
    assert code == 0, text


def test_tolerances_follow_the_dtype(tmp_path):
    x = torch.linspace(1, 2, 100)
    with ContentStoreWriter(tmp_path) as w:
        for side, delta in (("a", 0.0), ("b", 4e-3)):
            w.write_tensor(f"{side}/h", (x + delta).to(torch.bfloat16))
            w.write_tensor(f"{side}/f", (x + delta))
    result = tensorcas.bisect(f"{tmp_path}:a", f"{tmp_path}:b", compare_all=True)
    status = {c.key: c.status for c in result.compared}
    assert status == {"h": "close", "f": "different"}  # 4e-3 is within bfloat16's 1.6e-2 rtol
    assert result.first is not None and result.first.key == "f"
    loose = tensorcas.bisect(f"{tmp_path}:a", f"{tmp_path}:b", tolerances={"float32": (1e-2, 0.0)})
    assert loose.ok
    strict = tensorcas.bisect(f"{tmp_path}:a", f"{tmp_path}:b", rtol=0.0, atol=0.0)
    assert strict.first is not None and strict.first.key == "h"


def test_order_falls_back_to_writing_order_and_refuses_a_bad_index(tmp_path):
    with ContentStoreWriter(tmp_path) as w:
        for name in ("z", "a", "m"):
            w.write_tensor(f"hand/{name}", torch.ones(2))
    assert [e.key for e in read_order(ContentStoreReader(tmp_path), "hand")] == ["z", "a", "m"]
    with ContentStoreWriter(tmp_path) as w:
        w.write_tensor(
            "hand/index/000000", bytes_tensor(b'{"format": "tensorcas-recording", "version": 1}')
        )
    with pytest.raises(RecordingError, match="entries"):
        read_order(ContentStoreReader(tmp_path), "hand")
    with ContentStoreWriter(tmp_path) as w:
        w.write_tensor("hand/index/000000", bytes_tensor(b"\x80 not json"))
    with pytest.raises(RecordingError, match="not valid JSON"):
        read_order(ContentStoreReader(tmp_path), "hand")


# -- compiled graphs ------------------------------------------------------------------------------


def _wrong_relu_backend():
    """aot_eager with a deliberately wrong decomposition of relu (shifted by 1e-2)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.debugging import boxed_nop

    def wrong_relu(x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, 0) + 1e-2

    return aot_autograd(
        fw_compiler=boxed_nop,
        decompositions={torch.ops.aten.relu.default: wrong_relu},
    )


@pytest.fixture(scope="module")
def compiled_runs(tmp_path_factory):
    """One model recorded graph by graph: eagerly node by node, with aot_eager, with a wrong
    decomposition, and with Inductor."""
    loc = tmp_path_factory.mktemp("compiled")
    backends = {
        "eager": "eager",
        "aot": "aot_eager",
        "wrong": _wrong_relu_backend(),
        "inductor": "inductor",
    }
    outputs = {}
    for prefix, backend in backends.items():
        torch._dynamo.reset()
        model = make_model()
        with tensorcas.recording_backend(backend, loc, prefix, nodes=prefix == "eager") as rb:
            compiled = torch.compile(model, backend=rb, dynamic=False)
            with torch.no_grad():
                outputs[prefix] = compiled(TOKENS)
    torch._dynamo.reset()
    outputs["reference"] = make_model()(TOKENS).detach()
    return loc, outputs


def test_compiled_recordings_line_up_graph_by_graph(compiled_runs):
    loc, outputs = compiled_runs
    reader = ContentStoreReader(loc)
    eager = [e.key for e in read_order(reader, "eager")]
    aot = [e.key for e in read_order(reader, "aot")]
    assert "graph0/call0/input.0" in aot and "graph0/call0/output.0" in aot
    assert any(k.startswith("graph0/call0/node/") for k in eager)
    assert not any("/node/" in k for k in aot)
    assert set(aot) <= set(eager)  # the node-by-node run has the same graph inputs and outputs
    for prefix in ("eager", "aot", "inductor"):
        torch.testing.assert_close(outputs[prefix], outputs["reference"])
        result = tensorcas.bisect(f"{loc}:eager", f"{loc}:{prefix}")
        assert result.ok, "\n".join(tensorcas.maintenance.bisect.render(result))
        assert result.total >= len(aot)
    recorded = reader.read_tensor("inductor/graph0/call0/output.0")
    torch.testing.assert_close(recorded, outputs["reference"])


def test_wrong_decomposition_is_found_at_the_graph_output(compiled_runs):
    loc, _ = compiled_runs
    result = tensorcas.bisect(f"{loc}:aot", f"{loc}:wrong")
    assert result.first is not None
    assert result.first.key.startswith("graph") and "/output." in result.first.key
    assert all(c.ok for c in result.compared[:-1])
    assert result.inputs and all(c.status == "identical" for c in result.inputs)


def test_repro_script_reproduces_the_recorded_outputs(compiled_runs, tmp_path):
    loc, _ = compiled_runs
    script = tmp_path / "repro.py"
    code, out = tensorcas_cli("make-repro", str(loc), "aot", "--graph", "0", "-o", str(script))
    assert code == 0, out
    text = script.read_text()
    assert "load_tensor" in text and "def forward" in text
    env = {**os.environ, "PYTHONPATH": SRC}
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "reproduced" in run.stdout
    # the wrong decomposition's outputs are not what the graph computes eagerly
    (tmp_path / "wrong.py").write_text(tensorcas.make_repro(loc, "wrong", 0))
    run = subprocess.run(
        [sys.executable, str(tmp_path / "wrong.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "differs" in run.stdout


def test_repro_refuses_a_doctored_graph(compiled_runs, tmp_path):
    loc, _ = compiled_runs
    reader = ContentStoreReader(loc)
    doc = json.loads(bytes(reader.read_tensor("aot/graphs/0").tolist()))
    doc["code"] = "import os\n" + doc["code"]
    with ContentStoreWriter(tmp_path) as w:
        w.write_tensor("x/graphs/0", bytes_tensor(json.dumps(doc).encode()))
    with pytest.raises(RecordingError, match="not one 'forward' function"):
        tensorcas.make_repro(tmp_path, "x", 0)
    doc = json.loads(bytes(reader.read_tensor("aot/graphs/0").tolist()))
    doc["imports"].append("__import__('os').system('true')")
    with ContentStoreWriter(tmp_path) as w:
        w.write_tensor("x/graphs/0", bytes_tensor(json.dumps(doc).encode()))
    with pytest.raises(RecordingError, match="unexpected import line"):
        tensorcas.make_repro(tmp_path, "x", 0)


# -- plots ----------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0  # something was drawn


def test_plots_are_valid_pngs(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    hist, heat, along = tmp_path / "hist.png", tmp_path / "heat.png", tmp_path / "along.png"
    code, out = tensorcas_cli(
        "show", str(two_runs), "b/step0/blocks.1.fc1/output", "--plot", str(hist)
    )
    assert code == 0, out
    code, out = tensorcas_cli(
        "diff",
        f"{two_runs}:a/step0/blocks.1.fc1/",
        f"{two_runs}:b/step0/blocks.1.fc1/",
        "--plot",
        str(heat),
    )
    assert code == 1, out
    code, out = tensorcas_cli("bisect", f"{two_runs}:a", f"{two_runs}:b", "--plot", str(along))
    assert code == 1, out
    for path in (hist, heat, along):
        _check_png(path)


def test_the_plotted_divergence_is_at_the_position_the_text_gives(two_runs, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import re

    import tensorcas.plotting as plotting
    from tensorcas.maintenance.bisect import render

    figures = []
    real_save = plotting._save
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figures.append(fig) or real_save(fig, out))
    result = tensorcas.bisect(f"{two_runs}:a", f"{two_runs}:b")
    plotting.plot_error_along_run(result, tmp_path / "along.png")
    text = "\n".join(render(result))
    position = int(re.search(r"position (\d+) of", text).group(1))
    (ax,) = figures[0].axes
    red = [line for line in ax.get_lines() if line.get_label().startswith("first divergence")]
    assert [line.get_xdata()[0] for line in red] == [position]
    xs = list(ax.get_lines()[0].get_xdata())
    assert xs[0] == 1 and xs[-1] == len(result.compared)


def test_a_run_cut_short_keeps_the_order_of_its_finished_steps(tmp_path):
    model = make_model()
    rec = tensorcas.record(tmp_path, "cut", model, inputs=False).start()
    model(TOKENS)
    rec.step()  # step 0's index segment is written here
    model(TOKENS)
    rec.log.writer.flush()  # step 1's tensors are stored, its index segment is not
    try:
        reader = ContentStoreReader(tmp_path)
        entries = read_order(reader, "cut")
        steps = [e.key.split("/")[0] for e in entries]
        assert steps == sorted(steps) and "step1" in steps
        assert {e.kind for e in entries if e.step == 0} == {"output"}
        assert {e.kind for e in entries if e.key.startswith("step1/")} == {"tensor"}
        names = reader.list_tensors("cut/")
        stored = [e.key for e in entries if e.same_as is None]
        assert stored == [n[4:] for n in names if not n.startswith("cut/index/")]
    finally:
        rec.close()
    assert {e.kind for e in read_order(ContentStoreReader(tmp_path), "cut")} == {"output"}


def test_bisect_refuses_recordings_that_cannot_line_up(two_runs):
    with pytest.raises(RecordingError, match="nothing is recorded under"):
        tensorcas.bisect(f"{two_runs}:a", f"{two_runs}:nope")
    with pytest.raises(RecordingError, match="no names in common"):
        tensorcas.bisect(f"{two_runs}:a/step0/", f"{two_runs}:b/step1/head")
    code, _ = tensorcas_cli("bisect", f"{two_runs}:a", f"{two_runs}:nope")
    assert code == 2


def test_a_prefix_inside_a_recording_uses_its_order(two_runs):
    reader = ContentStoreReader(two_runs)
    whole = read_order(reader, "b")
    step1 = read_order(reader, "b/step1/")
    assert [e.key for e in step1] == [e.key[6:] for e in whole if e.key.startswith("step1/")]
    assert {e.kind for e in step1} == {"input", "output"}
    result = tensorcas.bisect(f"{two_runs}:a/step1", f"{two_runs}:b/step1")
    assert result.first is not None and result.first.key == "blocks.1.fc1/output"


def test_one_prefix_records_one_run_at_a_time(tmp_path):
    model = make_model()
    with tensorcas.record(tmp_path, "run", model):
        with pytest.raises(RecordingError, match="already running"):
            tensorcas.record(tmp_path, "run", model).start()
        with tensorcas.record(tmp_path, "other", model):
            model(TOKENS)
    rec = tensorcas.record(tmp_path, "run", model)
    with rec:  # free again once closed
        model(TOKENS)
    with pytest.raises(RecordingError, match="records one run"):
        rec.start()


class TwoIdentities(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Identity()
        self.b = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)  # the very same tensor object
        y.add_(1)  # changed in place: recorded again afterwards, not aliased
        return self.b(y)


def test_a_tensor_recorded_twice_is_stored_once_unless_it_changed(tmp_path):
    x = torch.zeros(3)
    with tensorcas.record(tmp_path, "r", TwoIdentities()):
        TwoIdentities()(x)
    model = TwoIdentities()
    with tensorcas.record(tmp_path, "r", model):
        model(torch.zeros(3))
    reader = ContentStoreReader(tmp_path)
    entries = {e.key: e for e in read_order(reader, "r")}
    assert entries["step0/a/input.0"].same_as == "r/step0/model/input.0"
    assert entries["step0/a/output"].same_as == "r/step0/model/input.0"
    assert entries["step0/b/input.0"].same_as is None  # its version changed
    assert entries["step0/b/output"].same_as == "r/step0/b/input.0"
    assert "r/step0/a/input.0" not in reader
    assert torch.equal(reader.read_tensor("r/step0/model/input.0"), torch.zeros(3))
    assert torch.equal(reader.read_tensor("r/step0/b/input.0"), torch.ones(3))
    with tensorcas.record(tmp_path, "all", model, aliases=False):
        model(torch.zeros(3))
    assert "all/step0/a/input.0" in ContentStoreReader(tmp_path)
    result = tensorcas.bisect(f"{tmp_path}:r", f"{tmp_path}:all")
    assert result.ok and len(result.compared) == 6


def test_aliases_line_up_with_a_run_that_stores_every_name(two_runs, tmp_path):
    run_eager(tmp_path, "full", perturbed="blocks.1.fc1", aliases=False)
    a = tensorcas.bisect(f"{two_runs}:a", f"{tmp_path}:full")
    assert a.first is not None and a.first.key == "step0/blocks.1.fc1/output"
    assert all(c.ok for c in a.compared[:-1])
    reader = ContentStoreReader(two_runs)
    aliased = [e for e in read_order(reader, "a") if e.same_as is not None]
    assert aliased and all(e.kind == "input" or e.key.endswith("model/output") for e in aliased)


def test_repro_script_keeps_quotes_in_names_as_data(compiled_runs, tmp_path):
    import ast

    loc, _ = compiled_runs
    reader = ContentStoreReader(loc)
    prefix = 'q"""+__import__("os").getpid()+"""'
    with ContentStoreWriter(tmp_path) as w:
        for name in reader.list_tensors("aot/"):
            w.write_tensor(prefix + name[3:], reader.read_tensor(name))
    text = tensorcas.make_repro(tmp_path, prefix, 0)
    tree = ast.parse(text)
    calls = [
        n for n in tree.body if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)
    ]
    assert calls == []  # nothing but the docstring, imports, definitions and the main guard
    assert ast.get_docstring(tree).startswith("Replays one graph call")


def test_recording_nothing_warns(tmp_path):
    model = make_model()
    rec = tensorcas.record(tmp_path, "none", model, modules=["no-such-module"])
    with pytest.warns(UserWarning, match="nothing was recorded"), rec:
        model(TOKENS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor(3.0),
        lambda: torch.empty(0, 4),
        lambda: torch.tensor([True, False, True]),
        lambda: torch.arange(6, dtype=torch.int64).reshape(2, 3),
        lambda: torch.tensor([1.0, float("nan"), float("inf")]),
        lambda: torch.randn(700, 3, 600),  # reduced to 512 x 512 for the heat map
    ],
    ids=["0-d", "empty", "bool", "int", "nan-inf", "large"],
)
def test_plots_of_unusual_tensors(tmp_path, make):
    pytest.importorskip("matplotlib")
    from tensorcas.plotting import plot_error_heatmap, plot_histogram

    a = make()
    b = a.clone() if a.dtype in (torch.bool, torch.int64) else a + 0.5
    with ContentStoreWriter(tmp_path / "s") as w:
        w.write_tensor("a", a)
        w.write_tensor("b", b)
    plot_histogram(tmp_path / "s", "a", tmp_path / "h.png")
    plot_error_heatmap(tmp_path / "s", "a", tmp_path / "s", "b", tmp_path / "e.png")
    for name in ("h.png", "e.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE


def test_a_large_step_is_indexed_in_several_segments(tmp_path, monkeypatch):
    monkeypatch.setattr("tensorcas.recording.log.SEGMENT_TARGET_BYTES", 200)
    model = make_model()
    with tensorcas.record(tmp_path, "big", model, inputs=False):
        model(TOKENS)
    reader = ContentStoreReader(tmp_path)
    segments = reader.list_tensors("big/index/")
    assert len(segments) > 3
    keys = [e.key for e in read_order(reader, "big")]
    assert keys[0] == "step0/embed/output" and keys[-1] == "step0/model/output"
    assert all(e.kind == "output" for e in read_order(reader, "big"))
