"""Data-parallel training: 2 CPU ranks (gloo on 127.0.0.1) against one process on the same global batch."""

import os
import socket

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.poutine.messenger import Messenger

from pyro_jepa.data.masks import MaskCollator
from pyro_jepa.data.tabular import TabularSchema
from pyro_jepa.models import TabularJEPAConfig, VarTJEPA
from pyro_jepa.train import TrainConfig, fit
from tests.conftest import make_table

SMALL = TabularJEPAConfig(dim=8, depth=1, heads=2, ff=16, dropout=0.0, n_pool=2, pred_dim=8, pred_depth=1, pred_heads=2, pred_ff=16, pred_dropout=0.0)
SCHEMA = TabularSchema(numerical=tuple(f"n{i}" for i in range(5)), categorical=("c0", "c1"), cardinalities=(3, 5), label="y", classes=("a", "b"))
GLOBAL_BATCH, WORLD = 8, 2
WEIGHTS = {"rec": 0.1, "gen": 1.0, "kl_s_x": 0.01, "kl_z": 0.001, "kl_s_y": 0.5}


class FixedNoise(Messenger):
    """Reparameterized guide samples ``loc + eps * scale`` with given ``eps``, so ranks can share one draw."""

    def __init__(self, eps: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg) -> None:
        if msg["name"] in self.eps and not msg["is_observed"]:
            fn = msg["fn"]
            while hasattr(fn, "base_dist"):
                fn = fn.base_dist
            msg["value"] = fn.loc + self.eps[msg["name"]] * fn.scale


class FixedVarTJEPA(VarTJEPA):
    """Var-T-JEPA whose loss uses fixed masks and noise for the rows it is given (set ``fixed``)."""

    fixed: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        context, target, eps = self.fixed
        return self.elbo.differentiable_loss(self.model, FixedNoise(eps)(self.guide), rows, context, target, weights=WEIGHTS)


class StepRecorder(VarTJEPA):
    """Var-T-JEPA that keeps a copy of its parameters after every optimizer step."""

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.after_steps = torch.cat([p.detach().flatten() for p in self.parameters()]).clone()


def global_batch():
    """Rows, masks and guide noise of one global batch, the same in every process."""
    rows = make_table(SCHEMA, GLOBAL_BATCH, seed=5).rows
    masks = MaskCollator(SCHEMA.n_features, SMALL.context_ratio, SMALL.target_ratio, SMALL.n_targets, seed=11)(GLOBAL_BATCH)
    g = torch.Generator().manual_seed(13)
    b, k, m_ctx, n, d = GLOBAL_BATCH, SMALL.n_targets, masks.context.shape[1], SCHEMA.n_features, SMALL.dim
    eps = {"s_x": torch.randn(b, m_ctx, d, generator=g), "z": torch.randn(b, d, generator=g), "s_y": torch.randn(b, k, n, d, generator=g)}
    return rows, masks.context, masks.target, eps


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        with pyro.validation_enabled(False):
            # One DDP step on this rank's half of the global batch; initial weights differ per rank
            # on purpose, DDP must broadcast rank 0's.
            torch.manual_seed(100 + rank)
            method = FixedVarTJEPA(SCHEMA, SMALL)
            net = torch.nn.parallel.DistributedDataParallel(method, forward_sync_buffers=False)
            rows, context, target, eps = global_batch()
            mine = slice(rank, None, WORLD)
            method.fixed = (context[mine], target[mine], {k: v[mine] for k, v in eps.items()})
            loss = net(rows[mine], 0)
            loss.backward()
            grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
            torch.save({"loss": loss.detach(), "grads": grads}, f"{out}/grad{rank}.pt")

            # The engine under DDP: a few steps, then the per-rank parameters after the last step.
            torch.manual_seed(rank)
            method = StepRecorder(SCHEMA, SMALL, seed=0)
            train, val = make_table(SCHEMA, 96, seed=1), make_table(SCHEMA, 32, seed=2)
            config = TrainConfig(epochs=2, batch_size=32, warmup_epochs=1, progress=False, seed=3, device="cpu")
            fit(method, train, val, config, f"{out}/run")
            torch.save(method.after_steps, f"{out}/fit{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_match_one_process_and_stay_identical(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"grad{r}.pt") for r in range(WORLD)]

    torch.manual_seed(100)  # rank 0's initial weights, which DDP broadcast
    method = FixedVarTJEPA(SCHEMA, SMALL)
    rows, context, target, eps = global_batch()
    method.fixed = (context, target, eps)
    with pyro.validation_enabled(False):
        loss = method(rows, 0)
    loss.backward()
    # Each rank's loss is the mean over its rows, so the global loss is the mean over ranks.
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach())
    for name, p in method.named_parameters():
        if p.grad is None:
            continue
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
        torch.testing.assert_close(ranks[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    after = [torch.load(tmp_path / f"fit{r}.pt") for r in range(WORLD)]
    assert torch.equal(after[0], after[1]), "parameters diverged across ranks"
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best.pt").exists()
