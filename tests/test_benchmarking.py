"""The step-measuring tools (`pyro_jepa.benchmarking`), the engine's foreach optimizer path, and tiny
runs of benchmarks/utilisation.py and benchmarks/cost_curves.py so that neither can rot."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pyro_jepa.benchmarking import count_flops, median_time, saved_activation_mib
from pyro_jepa.models import VarTJEPA
from pyro_jepa.models.tabular import TabularJEPAConfig
from pyro_jepa.train import TrainConfig, _optimizer, clip_gradients

from .conftest import make_table
from .test_experiment import load_script


def test_count_flops_matmul_and_cpu_attention_known_answers():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    batch, heads, length, d = 3, 2, 5, 4
    q, k, v = (torch.randn(batch, heads, length, d, requires_grad=True) for _ in range(3))
    forward = 4 * batch * heads * length * length * d  # QK^T and AV, 2 FLOPs per multiply-add
    with torch.no_grad():
        assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == forward
    # torch counts a backward as five batched matmuls (the scores recomputed, dP, dV, dQ, dK): 2.5 forwards
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == forward + 5 * forward // 2


def test_saved_activation_mib_counts_each_saved_tensor_once():
    x = torch.randn(1024, 256, requires_grad=True)  # 1 MiB of float32
    assert saved_activation_mib(lambda: x.exp()) == pytest.approx(1.0)  # exp saves its output
    # x * x saves x (twice, the same storage): counted once
    assert saved_activation_mib(lambda: x * x) == pytest.approx(1.0)
    with torch.no_grad():
        assert saved_activation_mib(lambda: x.exp()) == 0.0


def test_median_time_runs_warmup_and_reps_and_rejects_no_reps():
    calls = []
    assert median_time(lambda: calls.append(1), reps=5, warmup=2) >= 0.0
    assert len(calls) == 7
    with pytest.raises(ValueError, match="reps"):
        median_time(lambda: None, reps=0)


def test_engine_optimizer_foreach_path_is_bitwise_the_per_tensor_loop(schema):
    """The engine's foreach AdamW and clipping give the same weights, bit for bit, as torch's
    per-tensor loop (its CPU default), so switching to them changed no result."""
    table = make_table(schema, 64)
    config = TabularJEPAConfig(dim=16, depth=1, heads=2, ff=32, pred_dim=8, pred_depth=1, pred_heads=2, pred_ff=16)
    models, optimizers = [], []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = VarTJEPA(schema, config)
        optimizer = _optimizer(model, TrainConfig(lr=1e-2), **({} if foreach else {"foreach": False}))
        torch.manual_seed(1)
        for _ in range(3):
            loss = model.loss(table.rows, step=10**6)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = clip_gradients(model, 0.5, foreach=foreach)
            assert norm > 0.5  # clipping is active, so its path matters
            optimizer.step()
        models.append(model)
        optimizers.append(optimizer)
    assert all(g["foreach"] for g in optimizers[0].param_groups) and not any(g["foreach"] for g in optimizers[1].param_groups)
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(p, q), name


def test_utilisation_tiny_run(tmp_path):
    out = tmp_path / "utilisation.json"
    assert load_script("utilisation", "benchmarks").main(
        ["--cases", "cpu", "vje", "vje-1p", "--reps", "1", "--warmup", "0", "--profile-steps", "1", "--out", str(out)]
    ) == 0
    result = json.loads(out.read_text())
    assert result["matmul 1024x1024 float32 GFLOP/s"] > 0
    assert result["threads"] == torch.get_num_threads() and result["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cases = {c["case"]: c for c in result["cases"]}
    for case in cases.values():
        assert case["GFLOP per step"] > 0 and 0 < case["share of matmul"]
        assert sum(case["breakdown (share of step)"].values()) == pytest.approx(1.0)
    # The cpu preset's encoders have 4 heads of width 32/4; its predictor 4 heads of width 16/4.
    attention = {(a["H"], a["d_head"]) for a in cases["cpu"]["attention calls"]}
    assert attention == {(4, 8), (4, 4)}
    assert all(a["flash_attention (ms)"] > 0 and a["math (ms)"] > 0 for a in cases["cpu"]["attention calls"])
    assert cases["vje"]["attention calls"] == []
    # 32 draws of z per pair (VJEConfig's default) against one: the networks run once per pair either way,
    # and the particles' ELBO work is elementwise, which the FLOP counter (matmuls, convolutions) does not count
    assert "32 particle(s), KL weight 0.7" in cases["vje"]["model"] and "1 particle(s), KL weight 1" in cases["vje-1p"]["model"]
    assert cases["vje"]["GFLOP per step"] == cases["vje-1p"]["GFLOP per step"]
    assert cases["cpu"]["kernel ceiling (share of matmul)"] > 0 and cases["vje"]["kernel ceiling (share of matmul)"] is None
    paths = cases["cpu"]["optimizer paths (clip + AdamW, random gradients)"]
    assert paths["foreach"]["max |difference| from the loop"] == 0.0  # the engine's path changes no result
    assert all(p["ms"] > 0 for p in paths.values())


def test_kernel_ceiling_known_answer():
    ceiling = load_script("utilisation", "benchmarks").kernel_ceiling
    # Two attention calls, the faster backend 50 ms at 2 GFLOP/s each: 0.1 s for 0.2 GFLOP. The other
    # 9.8 GFLOP at the feed-forward layer's 98 GFLOP/s: 0.1 s. 10 GFLOP in 0.2 s against 100 GFLOP/s: 0.5.
    attention = [{"calls per step": 2, "math (ms)": 100.0, "math (GFLOP/s)": 1.0, "flash_attention (ms)": 50.0, "flash_attention (GFLOP/s)": 2.0}]
    assert ceiling(10e9, attention, {"GFLOP/s": 98.0}, 100e9) == pytest.approx(0.5)
    assert ceiling(10e9, [], {"GFLOP/s": 98.0}, 100e9) == pytest.approx(0.98)  # no attention: the layer's own share
    assert ceiling(10e9, attention, None, 100e9) is None  # no feed-forward layer timed (VJE's convnet)


def test_cost_curves_tiny_run(tmp_path):
    assert load_script("cost_curves", "benchmarks").main(
        ["--axes", "batch", "depth", "--max-value", "64", "--reps", "1", "--out-dir", str(tmp_path)]
    ) == 0
    frame = pd.read_csv(tmp_path / "cost_curves.csv")
    assert list(zip(frame["axis"], frame["value"])) == [("batch", 32), ("batch", 64), ("depth", 1), ("depth", 2), ("depth", 4), ("depth", 8)]
    assert (frame["seconds"] > 0).all()
    # Activations grow with the batch and with the depth.
    for axis in ("batch", "depth"):
        memory = frame.loc[frame["axis"] == axis, "activations_mib"].to_numpy()
        assert (memory[1:] > memory[:-1]).all()
    result = json.loads((tmp_path / "cost_curves.json").read_text())
    assert set(result["slopes (log-log, last two points)"]) == {"batch", "depth"}
    assert (tmp_path / "cost_curves.png").stat().st_size > 0


def test_cost_curves_feature_groups_cut_the_cost_of_a_wide_table(tmp_path):
    assert load_script("cost_curves", "benchmarks").main(
        ["--axes", "group", "--max-value", "4", "--tokens-batch", "2", "--reps", "1", "--out-dir", str(tmp_path)]
    ) == 0
    frame = pd.read_csv(tmp_path / "cost_curves.csv")
    assert list(frame["value"]) == [1, 2, 4] and (frame["setting_tokens"] == 784).all()
    memory = frame["activations_mib"].to_numpy()
    assert (memory[1:] < memory[:-1]).all()  # 784, 392, 196 tokens


def test_transformer_gives_the_same_outputs_and_gradients_with_either_attention_backend(schema):
    """The engine leaves the attention kernel to torch (flash on CPU, measured fastest in
    docs/results/performance.md); forcing the math backend changes outputs and gradients by rounding only."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = make_table(schema, 32)
    config = TabularJEPAConfig(dim=16, depth=2, heads=4, ff=32, pred_dim=8, pred_depth=2, pred_heads=2, pred_ff=16, dropout=0.0, pred_dropout=0.0)
    torch.manual_seed(0)
    model = VarTJEPA(schema, config)
    results = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        model.zero_grad(set_to_none=True)
        model.reseed(0)
        torch.manual_seed(1)
        with sdpa_kernel(backend):
            loss = model.loss(table.rows, step=10**6)
            loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_flash, grads_flash), (loss_math, grads_math) = results
    torch.testing.assert_close(loss_flash, loss_math, rtol=1e-5, atol=1e-6)
    assert grads_flash.keys() == grads_math.keys()
    for name in grads_flash:
        torch.testing.assert_close(grads_flash[name], grads_math[name], rtol=1e-4, atol=1e-6, msg=name)
