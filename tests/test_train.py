"""The training engine: schedules, checkpoints, resume, selection on the validation split."""

import math
import pickle
from dataclasses import replace

import pandas as pd
import pytest
import torch

from pyro_jepa.evaluate import linear_probe_accuracy
from pyro_jepa.models import TJEPA, LossWeights, TabularJEPAConfig, VarTJEPA
from pyro_jepa.presets import make_preset
from pyro_jepa.train import CheckpointError, TrainConfig, fit, learning_rate, load_checkpoint, save_checkpoint
from tests.conftest import make_table

SMALL = TabularJEPAConfig(dim=8, depth=1, heads=2, ff=16, dropout=0.0, n_pool=2, pred_dim=8, pred_depth=1, pred_heads=2, pred_ff=16, pred_dropout=0.0)
FAST = TrainConfig(epochs=4, batch_size=32, warmup_epochs=1, progress=False, seed=3)


@pytest.fixture
def splits(schema):
    return make_table(schema, 128, seed=1), make_table(schema, 64, seed=2)


def test_learning_rate_warms_up_then_decays_by_cosine():
    lrs = [learning_rate(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("cls", [VarTJEPA, TJEPA])
def test_fit_logs_every_term_and_keeps_the_best_validation_epoch(cls, schema, splits, tmp_path):
    torch.manual_seed(0)
    method = cls(schema, SMALL)
    result = fit(method, *splits, FAST, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    expected = {"train_loss", "val_loss", "val_probe_accuracy", "lr"}
    if cls is VarTJEPA:
        expected |= {"val_rec", "val_gen", "val_kl_s_x", "val_kl_z", "val_kl_s_y", "alpha_kl_s_y"}
    assert expected <= set(history.columns)
    assert history[list(expected)].notna().all().all()
    best = int(history["val_probe_accuracy"].idxmax()) + 1  # first epoch reaching the maximum
    assert result.best_epoch == best
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best
    best_state = load_checkpoint(tmp_path / "best.pt")["method"]
    for key, value in method.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, best_state[key])
    if cls is VarTJEPA:  # the engine keeps the training rows for the training-kl score, in every checkpoint
        torch.testing.assert_close(best_state["reference_rows"], splits[0].rows)
        # ... and the smoothing of their aggregate posterior, fitted on the validation rows after training
        assert method.smoothing_curve and float(best_state["reference_smoothing"]) == min(method.smoothing_curve, key=method.smoothing_curve.get)


def test_t_jepa_target_encoder_follows_ema(schema, splits, tmp_path):
    torch.manual_seed(0)
    method = TJEPA(schema, SMALL)
    before = [p.clone() for p in method.target_encoder.parameters()]
    fit(method, *splits, TrainConfig(epochs=1, batch_size=32, progress=False), tmp_path)
    after = list(method.target_encoder.parameters())
    assert all(not p.requires_grad for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "EMA never moved the target encoder"
    online = list(method.context_encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, online)), "target encoder is a copy, not an average"


class Interrupted(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(schema, splits, tmp_path):
    torch.manual_seed(0)
    straight = VarTJEPA(schema, SMALL)
    full = fit(straight, *splits, FAST, tmp_path / "straight")

    torch.manual_seed(0)
    victim = VarTJEPA(schema, SMALL)
    calls = {"n": 0}
    real = victim.diagnostics

    def dies_in_third_validation(rows, step):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted
        return real(rows, step)

    victim.diagnostics = dies_in_third_validation
    with pytest.raises(Interrupted):
        fit(victim, *splits, FAST, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2

    torch.manual_seed(123)  # a fresh process: different initial weights and RNG
    resumed_method = VarTJEPA(schema, SMALL)
    resumed = fit(resumed_method, *splits, FAST, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(full.history, resumed.history):
        for key in ("train_loss", "val_loss", "val_kl_s_y", "val_probe_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    for (name, a), b in zip(straight.state_dict().items(), resumed_method.state_dict().values()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, msg=name)


def test_checkpoints_load_safely_with_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable pyro_jepa checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="format tag"):
        load_checkpoint(foreign)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "pyro_jepa-checkpoint-v1", "x": Payload()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "pyro_jepa-checkpoint-v1", "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert not (tmp_path / "last.pt.tmp").exists()


def test_resume_with_other_settings_gives_a_clear_error(schema, splits, tmp_path):
    torch.manual_seed(0)
    fit(VarTJEPA(schema, SMALL), *splits, TrainConfig(epochs=1, batch_size=32, progress=False), tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    bigger = VarTJEPA(schema, TabularJEPAConfig(dim=16, depth=1, heads=2, ff=16, n_pool=2, pred_dim=8, pred_depth=1, pred_heads=2, pred_ff=16))
    with pytest.raises(CheckpointError, match=r"other settings or data: model\.dim: 8 when started, 16 now.*--overwrite"):
        fit(bigger, *splits, TrainConfig(epochs=2, batch_size=32, progress=False), tmp_path, resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_bf16_autocast_keeps_log_densities_in_float32(schema, splits, tmp_path):
    import pyro

    torch.manual_seed(0)
    method = VarTJEPA(schema, SMALL)
    rows = splits[0].rows[:32]
    pyro.set_rng_seed(4)
    full = method.loss(rows, 100)
    pyro.set_rng_seed(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method.loss(rows, 100)
        loc, scale = method.context_head(method.context_encoder(rows))
    assert mixed.dtype == torch.float32 and loc.dtype == scale.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(full), rel=0.05)
    result = fit(method, *splits, TrainConfig(epochs=1, batch_size=32, progress=False, amp="bf16"), tmp_path)
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")


def test_gradients_are_bitwise_identical_across_repeats_with_two_threads():
    """Repeated positions in the predictor's gathers once made backward sums thread-order dependent
    (`position[index]`), so the same seed gave different weights run to run on 2 cores."""
    from pyro_jepa.data.tabular import TabularSchema

    wide = TabularSchema(tuple(f"n{i}" for i in range(24)), ("c0", "c1"), (3, 5), "y", ("a", "b"))
    config = TabularJEPAConfig(dim=16, depth=1, heads=2, ff=32, dropout=0.0, pred_dim=16, pred_depth=1, pred_heads=2,
                               pred_ff=32, pred_dropout=0.0)
    rows = make_table(wide, 256, seed=4).rows
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(4):
            torch.manual_seed(0)
            method = VarTJEPA(wide, config)
            method.loss(rows, 10).backward()
            grads.append(torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None]))
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        assert torch.equal(grads[0], other)


def warming_method(schema, anneal: int) -> VarTJEPA:
    """A Var-T-JEPA whose KL weights ramp up over ``anneal`` steps (4 steps per epoch on `splits`)."""
    torch.manual_seed(0)
    weights = LossWeights(rec=0.1, gen=1.0, kl_s_x=1.0, kl_z=1.0, kl_s_y=1.0, anneal_s_x=anneal, anneal_z=anneal, anneal_s_y=anneal)
    return VarTJEPA(schema, replace(SMALL, weights=weights))


@pytest.mark.parametrize("select", ["loss", "probe", "last"])
def test_no_epoch_inside_the_kl_warm_up_is_selected(schema, splits, tmp_path, select):
    # The validation loss grows while the KL weights ramp up, so without the rule epoch 1 would win.
    result = fit(warming_method(schema, anneal=8), *splits, replace(FAST, select=select), tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["selectable"]) == [False, True, True, True]  # 4 steps per epoch, warm-up ends at step 8
    assert result.best_epoch >= 2
    if select == "last":  # the final weights, whatever the validation loss says
        assert result.best_epoch == 4 and "val_probe_accuracy" not in history
        assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 4
    if select == "probe":
        assert history["val_probe_accuracy"].isna().tolist() == [True, False, False, False]  # not even probed


def test_pretraining_record_states_the_kept_epochs_steps_and_warm_up(schema, splits, tmp_path):
    from pyro_jepa.pipeline import pretraining_record

    method = warming_method(schema, anneal=8)
    result = fit(method, *splits, replace(FAST, select="last"), tmp_path / "v")
    assert result.steps == 16  # 4 epochs of 4 steps
    assert result.epoch_seconds == pytest.approx(pd.read_csv(tmp_path / "v" / "history.csv")["seconds"].sum())
    assert pretraining_record(method, result) == {"best_epoch": 4, "steps": 16, "warmup_steps": 8,
                                                  "smoothing": float(method.reference_smoothing)}
    torch.manual_seed(0)
    baseline = TJEPA(schema, SMALL)
    result = fit(baseline, *splits, replace(FAST, epochs=2, select="last"), tmp_path / "t")
    assert pretraining_record(baseline, result) == {"best_epoch": 2, "steps": 8, "warmup_steps": 0}  # no KL, no smoothing


def test_a_warm_up_longer_than_the_run_is_refused(schema, splits, tmp_path):
    with pytest.raises(ValueError, match="outlasts the run"):
        fit(warming_method(schema, anneal=17), *splits, FAST, tmp_path)


def test_filtered_probe_selection_scores_the_least_uncertain_validation_rows(schema, splits, tmp_path):
    torch.manual_seed(0)
    method = VarTJEPA(schema, replace(SMALL, uncertainty="posterior-mean"))
    result = fit(method, *splits, replace(FAST, select="probe-filtered"), tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    # Re-scoring the best weights by hand: the probe's accuracy after dropping the 20 % most uncertain rows.
    train, val = splits
    uncertainty = method.scores(val.rows, ["posterior-mean"])["posterior-mean"].numpy()
    expected = linear_probe_accuracy(method.embed(train.rows).flatten(1).numpy(), train.y.numpy(),
                                     method.embed(val.rows).flatten(1).numpy(), val.y.numpy(), uncertainty=uncertainty)
    assert history.loc[result.best_epoch - 1, "val_probe_accuracy"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="select"):
        TrainConfig(select="filtered")


def test_presets_fit_the_kl_warm_up_into_the_run():
    model, train = make_preset("cpu", "sim", n_train=7000)
    steps_per_epoch = 7000 // train.batch_size
    assert model.weights.warmup_steps == 4 * steps_per_epoch and train.epochs == 15
    model, train = make_preset("cpu", "sim", n_train=7000, epochs=2)
    assert train.epochs == 2 and model.weights.warmup_steps == steps_per_epoch  # capped at half the run
    model, _ = make_preset("paper", "mnist", n_train=7000, epochs=50, batch_size=100)
    assert model.weights.warmup_steps == 25 * 70


def test_pretrain_reuses_a_checkpoint_folder_only_for_the_same_training(schema, splits, tmp_path):
    from pyro_jepa.data.tabular import Splits
    from pyro_jepa.pipeline import pretrain

    data = Splits(splits[0], splits[1], splits[1], name="toy")
    config = replace(FAST, epochs=1)
    pretrain("var-t-jepa", data, SMALL, config, tmp_path / "v", resume=True)
    stamp = (tmp_path / "v" / "best.pt").stat().st_mtime_ns
    # The default score does not change training (only the filtered probe reads it): reused as it is.
    pretrain("var-t-jepa", data, replace(SMALL, uncertainty="predictive-nll"), config, tmp_path / "v", resume=True)
    assert (tmp_path / "v" / "best.pt").stat().st_mtime_ns == stamp
    with pytest.raises(CheckpointError, match="other settings"):
        pretrain("var-t-jepa", data, replace(SMALL, weights=LossWeights(kl_s_y=0.5)), config, tmp_path / "v", resume=True)
    # T-JEPA never reads Var-T-JEPA's fields.
    pretrain("t-jepa", data, SMALL, config, tmp_path / "t", resume=True)
    pretrain("t-jepa", data, replace(SMALL, decoder_scale="row"), config, tmp_path / "t", resume=True)
    with pytest.raises(CheckpointError, match="other settings"):
        pretrain("t-jepa", data, SMALL, replace(config, lr=0.5), tmp_path / "t", resume=True)
