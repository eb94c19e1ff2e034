"""The OpenVINO engine and bf16 against torch fp32 on every head, how ``--engine auto`` chooses between
two exported engines that both agree with torch, and the one line a missing engine package gives."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import pytest
import torch

from conftest import one_line_error
from scrapvision import TASKS, engines
from scrapvision.api import build_task, load_engine
from scrapvision.cli import main
from scrapvision.engines import OnnxEngine, OpenVinoEngine, bf16_autocast, parity_example
from scrapvision.export import export_onnx, flatten_outputs
from scrapvision.heads import load_all

load_all()
HEADS = [name for name in TASKS.names() if name != "toy"]
#: |OpenVINO - torch| on the smoke models is at most ~8e-6 (fp32 both; summation order differs)
FP32_ATOL = 1e-4
#: bf16 keeps 8 significant bits: accepted max |bf16 - fp32| per output, as a fraction of the output's
#: largest |fp32| value. Measured on the smoke models (torch autocast): segdec 2.9 %, clip_anomaly 0.9 %,
#: canet 0.6 %, severstal 0.5 %, scrap_cls 0.2 %, pretrain 0.9 %; OpenVINO bf16: segdec 3.6 %, pretrain
#: 1.0 %, the others at most 0.6 %. This test prints them with -s.
BF16_FRACTION = 0.05


def inputs_of(task, batch: int) -> list[tuple[torch.Tensor, ...]]:
    """The example input at ``batch``, and once more with each dynamic axis one longer (canet: 3 photos)."""
    example = task.example_input(batch)
    example = example if isinstance(example, tuple) else (example,)
    grown = [tuple(torch.cat([t, t.narrow(axis, 0, 1)], axis) for t in example) for axis in task.export_dynamic_axes()]
    return [tuple(torch.rand_like(t) for t in x) for x in (example, *grown)]


@pytest.mark.parametrize("name", HEADS)
def test_openvino_engine_matches_torch(name, smoke, tmp_path, one_thread):
    pytest.importorskip("openvino")
    task, model, _ = smoke(name)
    engine = OpenVinoEngine(export_onnx(task, model, tmp_path / "m.onnx"), threads=1)
    torch.manual_seed(0)
    for x in inputs_of(task, 3):
        with torch.no_grad():
            expected, got = model(*x), engine(*x)
        assert type(got) is type(expected)
        for e, g in zip(flatten_outputs(expected), flatten_outputs(got)):
            torch.testing.assert_close(g, e, atol=FP32_ATOL, rtol=0)


def test_openvino_compiles_each_input_shape_once_up_to_its_limit(smoke, tmp_path, one_thread, monkeypatch):
    """Each new input shape gets a graph compiled with every shape fixed (faster on the CPU plugin), with the
    same outputs; past ``STATIC_SHAPES`` shapes the dynamic graph runs them."""
    pytest.importorskip("openvino")
    task, model, _ = smoke("segdec")
    monkeypatch.setattr(OpenVinoEngine, "STATIC_SHAPES", 2)
    engine = OpenVinoEngine(export_onnx(task, model, tmp_path / "m.onnx"), threads=1)
    torch.manual_seed(0)
    for batch in (1, 2, 1, 3):
        x = tuple(torch.rand_like(t) for t in inputs_of(task, batch)[0])
        with torch.no_grad():
            expected, got = model(*x), engine(*x)
        for e, g in zip(flatten_outputs(expected), flatten_outputs(got)):
            torch.testing.assert_close(g, e, atol=FP32_ATOL, rtol=0)
    shapes = {key[0][0]: request for key, request in engine.static.items()}
    assert sorted(shapes) == [1, 2, 3]
    for batch in (1, 2):
        assert all(port.partial_shape.is_static for port in shapes[batch].get_compiled_model().inputs)
    assert shapes[3] is None, "a third shape was compiled past the limit of two"
    assert not engine.request.get_compiled_model().inputs[0].partial_shape.is_static


def copy_of(smoke, name, tmp_path):
    _, _, checkpoint = smoke(name)
    local = tmp_path / checkpoint.name
    shutil.copy(checkpoint, local)
    return local


def test_auto_takes_the_faster_engine_and_times_once_per_graph(smoke, tmp_path, one_thread, monkeypatch):
    pytest.importorskip("openvino")
    local = copy_of(smoke, "segdec", tmp_path)
    monkeypatch.setattr(engines, "_median_call_s", lambda found, example: {"onnx": 2.0, "openvino": 1.0})
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OpenVinoEngine)
    record = json.loads(local.with_suffix(".engine.json").read_text())
    assert record["engine"] == "openvino"
    assert record["median_s_per_item"] == {"batch 1": {"onnx": 2.0, "openvino": 1.0},
                                           "batch 8": {"onnx": 0.25, "openvino": 0.125}}

    def no_timing(found, example):
        raise AssertionError("timed again although the graph did not change")

    def not_opened(*args, **kwargs):
        raise AssertionError("ONNX Runtime opened although OpenVINO was remembered as faster and agrees")

    with monkeypatch.context() as patch:
        patch.setattr(engines, "_median_call_s", no_timing)
        patch.setattr(engines, "OnnxEngine", not_opened)
        assert isinstance(load_engine("segdec", local, engine="auto")[1], OpenVinoEngine)
    record = json.loads(local.with_suffix(".engine.json").read_text())
    del record["key"]["timing"]  # a record of the timing before 2026-12-03 (batch 2 alone, unsettled)
    record["engine"] = "onnx"
    local.with_suffix(".engine.json").write_text(json.dumps(record))
    monkeypatch.setattr(engines, "_median_call_s", lambda found, example: {"onnx": 2.0, "openvino": 1.0})
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OpenVinoEngine), "an old timing was trusted"
    record = json.loads(local.with_suffix(".engine.json").read_text())
    del record["key"]["timing"]["openvino_static_shapes"]  # timed when OpenVINO ran the dynamic graph alone
    record["engine"] = "onnx"
    local.with_suffix(".engine.json").write_text(json.dumps(record))
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OpenVinoEngine), "a dynamic-graph timing was trusted"
    local.touch()  # a newer checkpoint: exported again, so timed again
    monkeypatch.setattr(engines, "_median_call_s", lambda found, example: {"onnx": 1.0, "openvino": 2.0})
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OnnxEngine)


def test_auto_times_one_item_and_a_batch_and_takes_the_faster_over_both(smoke, tmp_path, one_thread, monkeypatch):
    """ONNX Runtime a little faster one image at a time, OpenVINO much faster on batches of 8: OpenVINO (the
    geometric mean of the times per item); and the inputs timed are the example's first item, alone and x 8."""
    pytest.importorskip("openvino")
    local = copy_of(smoke, "segdec", tmp_path)
    sizes = []

    def by_batch(found, example):
        sizes.append(int(example[0].shape[0]))
        assert all(torch.equal(row, example[0][0]) for row in example[0])
        return {"onnx": 1.0, "openvino": 1.1} if sizes[-1] == 1 else {"onnx": 8.0, "openvino": 4.0}

    monkeypatch.setattr(engines, "_median_call_s", by_batch)
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OpenVinoEngine)
    assert sizes == [1, 8]


def test_auto_in_a_read_only_run_folder_chooses_without_remembering(smoke, tmp_path, one_thread, monkeypatch):
    pytest.importorskip("openvino")
    local = copy_of(smoke, "segdec", tmp_path)
    load_engine("segdec", local, engine="onnx")  # the graph exported earlier, then the folder became read-only

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(local.with_suffix(".engine.json")))

    monkeypatch.setattr(engines, "atomic_write", read_only)  # root ignores chmod, so the write itself fails
    monkeypatch.setattr(engines, "_median_call_s", lambda found, example: {"onnx": 1.0, "openvino": 2.0})
    assert isinstance(load_engine("segdec", local, engine="auto")[1], OnnxEngine)
    assert not local.with_suffix(".engine.json").exists()


def timings(**seconds):
    """A stand-in for auto's timing: these seconds per call for the engines named, 1 s for any other."""
    return lambda found, example: {name: seconds.get(name.replace("-", "_"), 1.0) for name in found}


def without_openvino_bf16(monkeypatch) -> None:
    """Leave OpenVINO's bf16 mode out of auto's candidates in the test process. Since OpenVINO's bf16 is detected
    (2026-12-03), these tests compiled it in-process, and a later test of the suite (a subprocess spawn in
    test_errors.py) then died of a segmentation fault in CI, reproducibly, while each file alone passed; the
    cause is not found. The rule under test is the same for both bf16 candidates; torch's stands for them here."""
    monkeypatch.setattr(engines, "BF16_ENGINES", {"torch-bf16": engines.BF16_ENGINES["torch-bf16"]})


def test_auto_runs_bf16_only_where_it_is_clearly_faster_and_says_so(smoke, tmp_path, one_thread, monkeypatch, capsys):
    """--precision auto (the default): on a CPU with native bf16, torch under bf16 autocast replaces the fp32
    engines when it is BF16_MIN_GAIN times faster, with one stderr line; 1.1x faster is not enough, and
    --precision fp32 never even times it."""
    local = copy_of(smoke, "severstal", tmp_path)
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    without_openvino_bf16(monkeypatch)
    monkeypatch.setattr(engines, "_median_call_s", timings(onnx=2.0, openvino=2.0, torch_bf16=1.0, openvino_bf16=3.0))
    task, model = load_engine("severstal", local, engine="auto")
    assert getattr(model, "auto_name", None) == "torch-bf16"
    assert "running torch (bf16 autocast)" in capsys.readouterr().err
    example = parity_example(task)
    with torch.no_grad():
        assert model(*example)[0].dtype == torch.float32  # bf16 inside, fp32 outputs for the post-processing
    assert json.loads(local.with_suffix(".engine.json").read_text())["engine"] == "torch-bf16"

    local.touch()  # a newer checkpoint: timed again
    monkeypatch.setattr(engines, "_median_call_s", timings(onnx=1.1, openvino=2.0, torch_bf16=1.0, openvino_bf16=3.0))
    assert getattr(load_engine("severstal", local, engine="auto")[1], "auto_name", None) == "onnx"
    assert "bf16" not in capsys.readouterr().err

    def fp32_only(found, example):
        assert not any("bf16" in name for name in found), found
        return {name: 1.0 for name in found}

    monkeypatch.setattr(engines, "_median_call_s", fp32_only)
    assert getattr(load_engine("severstal", local, engine="auto", precision="fp32")[1], "auto_name", None) in engines.EXPORTED
    assert capsys.readouterr().err == ""


def test_auto_drops_a_bf16_engine_that_strays_from_fp32(smoke, tmp_path, one_thread, monkeypatch, capsys):
    """A bf16 candidate farther from fp32 than BF16_RTOL never runs, however fast."""
    local = copy_of(smoke, "severstal", tmp_path)
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: True)
    without_openvino_bf16(monkeypatch)
    monkeypatch.setattr(engines, "BF16_RTOL", 0.0)
    monkeypatch.setattr(engines, "_median_call_s", timings(onnx=2.0, openvino=2.0, torch_bf16=0.1, openvino_bf16=0.1))
    assert getattr(load_engine("severstal", local, engine="auto")[1], "auto_name", None) in engines.EXPORTED
    assert "running" not in capsys.readouterr().err


def test_auto_on_a_cpu_without_bf16_never_tries_it(smoke, tmp_path, one_thread, monkeypatch):
    local = copy_of(smoke, "severstal", tmp_path)
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(engines, "bf16_autocast", lambda model: pytest.fail("bf16 built on a CPU without bf16"))
    assert getattr(load_engine("severstal", local, engine="auto")[1], "auto_name", None) in engines.EXPORTED


@pytest.fixture()
def no_openvino(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else find_spec(n, *a))


def test_missing_openvino_is_one_line_and_auto_quietly_uses_onnx_runtime(smoke, tmp_path, one_thread, capsys,
                                                                        no_openvino):
    local = copy_of(smoke, "severstal", tmp_path)
    assert main(["eval", "--task", "severstal", "--checkpoint", str(local), "--engine", "openvino"]) == 2
    assert "pip install scrapvision[openvino]" in one_line_error(capsys)
    assert isinstance(load_engine("severstal", local, engine="auto")[1], OnnxEngine)
    assert capsys.readouterr().err == ""


def test_cli_eval_on_openvino_scores_as_torch_and_torch_refuses_an_onnx_file(smoke, tmp_path, one_thread, capsys):
    pytest.importorskip("openvino")
    local = copy_of(smoke, "severstal", tmp_path)
    scores = {}
    for engine in ("torch", "openvino"):
        out = tmp_path / f"{engine}.json"
        assert main(["eval", "--task", "severstal", "--checkpoint", str(local), "--engine", engine, "--out", str(out)]) == 0
        scores[engine] = json.loads(out.read_text())
    assert scores["openvino"] == pytest.approx(scores["torch"], abs=1e-4)
    capsys.readouterr()
    assert main(["eval", "--task", "severstal", "--checkpoint", str(local.with_suffix(".onnx")), "--engine", "torch"]) == 2
    assert "is an exported graph" in one_line_error(capsys)


@pytest.mark.parametrize("engine", ["torch", "openvino"])
@pytest.mark.parametrize("name", HEADS)
def test_bf16_stays_within_a_stated_fraction_of_fp32(name, engine, smoke, tmp_path, one_thread):
    task, model, _ = smoke(name)
    if engine == "openvino":
        pytest.importorskip("openvino")
        bf16 = OpenVinoEngine(export_onnx(task, model, tmp_path / "m.onnx"), threads=1, precision="bf16")
    else:
        bf16 = bf16_autocast(copy.deepcopy(model))
    example = parity_example(task)
    with torch.no_grad():
        pairs = list(zip(flatten_outputs(model(*example)), flatten_outputs(bf16(*example))))
    fractions = [float((g - e).abs().max() / e.abs().max()) for e, g in pairs]
    print(f"{name} {engine} bf16: max |bf16 - fp32| / max |fp32| per output: {[f'{f:.2%}' for f in fractions]}")
    assert all(g.dtype == e.dtype for e, g in pairs)  # back in fp32 for the heads' post-processing
    assert max(fractions) <= BF16_FRACTION
    if engine == "torch" or bf16.precision == "bf16":  # OpenVINO keeps f32 on a CPU without bf16 units (and says so)
        assert max(fractions) > 0  # it did compute in bf16


def test_cli_precision_bf16_evaluates_and_is_refused_on_onnx_runtime(smoke, tmp_path, one_thread, capsys):
    local = copy_of(smoke, "severstal", tmp_path)
    scores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        assert main(["eval", "--task", "severstal", "--checkpoint", str(local), "--engine", "torch",
                     "--precision", precision, "--out", str(out)]) == 0
        scores[precision] = json.loads(out.read_text())
    assert scores["bf16"]["images"] == scores["fp32"]["images"]
    assert scores["bf16"]["dice"] == pytest.approx(scores["fp32"]["dice"], abs=0.05)
    capsys.readouterr()
    assert main(["eval", "--task", "severstal", "--checkpoint", str(local), "--engine", "onnx", "--precision", "bf16"]) == 2
    assert "--precision bf16: runs on --engine torch or openvino" in one_line_error(capsys)


def test_openvino_reports_the_precision_its_plugin_runs(tmp_path, one_thread):
    """OpenVinoEngine.precision is what the compiled model runs: bf16 exactly where the CPU plugin lists BF16
    among its capabilities (the property is an ov.Type, not a string containing "bf16")."""
    ov = pytest.importorskip("openvino")
    task = build_task("severstal", overrides=TASKS.get("severstal").smoke_overrides)
    path = export_onnx(task, task.build_model().eval(), tmp_path / "m.onnx")
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert OpenVinoEngine(path, threads=1, precision="bf16", quiet=True).precision == ("bf16" if native else "fp32")
    assert OpenVinoEngine(path, threads=1).precision == "fp32"


def test_auto_times_each_engine_after_a_pause_and_an_untimed_call(monkeypatch):
    """A call straight after another engine's is slowed by that engine's spinning threads: auto's timing pauses,
    discards one call of each engine per round, then times a block of back-to-back calls. The stand-ins are slow
    on the first call after a pause only."""
    import time

    real_sleep, calls, pauses = time.sleep, [], []

    class Engine(torch.nn.Module):
        def __init__(self, name, seconds):
            super().__init__()
            self.name, self.seconds = name, seconds

        def forward(self, x):
            after_pause = bool(pauses) and pauses[-1] == len(calls)
            calls.append(self.name)
            real_sleep(0.03 if after_pause else self.seconds)  # the first call: disturbed by the engine before

    monkeypatch.setattr(engines, "BLOCK_S", 0.02)
    monkeypatch.setattr(engines.time, "sleep", lambda s: (pauses.append(len(calls)), real_sleep(s)))
    seconds = engines._median_call_s({"a": Engine("a", 0.0), "b": Engine("b", 0.01)}, (torch.zeros(1),), budget_s=0)
    assert seconds["a"] < 0.005 and 0.01 <= seconds["b"] < 0.015, seconds
    blocks = [calls[i:j] for i, j in zip(pauses, pauses[1:] + [len(calls)])]
    assert len(blocks) >= 6 and [b[0] for b in blocks] == ["a", "b"] * (len(blocks) // 2)
    assert all(len(set(b)) == 1 and len(b) >= 3 for b in blocks)  # one engine a block: the untimed call + >= 2 timed
