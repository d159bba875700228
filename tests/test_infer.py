"""The engine's sync-free estimators give Pyro's loss and gradients exactly (they read Pyro's private
trace internals, so this pins them on the installed Pyro version; pyproject.toml bounds the versions)."""

import pyro
import pytest
import torch

from pyro_jepa.infer import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO, make_elbo
from pyro_jepa.models import TERMS, MLPVarJEPA, VarTJEPA
from tests.test_train import SMALL

PAIRS = [(pyro.infer.Trace_ELBO, SyncFreeTrace_ELBO), (pyro.infer.TraceMeanField_ELBO, SyncFreeTraceMeanField_ELBO)]
WEIGHTS = {
    "all one": {t: 1.0 for t in TERMS},
    "warm-up start (zero KL weights mask sites)": {"rec": 0.1, "gen": 1.0, "kl_s_x": 0.0, "kl_z": 0.0, "kl_s_y": 1e-5},
}


def programs(schema, table):
    torch.manual_seed(0)
    tabular = VarTJEPA(schema, SMALL)
    mlp = MLPVarJEPA(5, 2, latent_dim=4, aux_dim=2, hidden=16)
    return {"Var-T-JEPA": (tabular, tabular.program_args(table.rows)), "MLP Var-JEPA": (mlp, mlp.program_args(table.rows))}


def loss_and_grads(estimator, program, data, weights, particles, validate):
    pyro.set_rng_seed(1)
    with pyro.validation_enabled(validate):
        loss = estimator(max_plate_nesting=1, num_particles=particles).differentiable_loss(
            program.model, program.guide, *data, weights=weights
        )
    return loss.detach(), torch.autograd.grad(loss, list(program.parameters()), allow_unused=True)


@pytest.mark.parametrize("weights", sorted(WEIGHTS))
@pytest.mark.parametrize("particles", [1, 2])
def test_sync_free_elbos_equal_pyros(schema, table, weights, particles):
    for name, (program, data) in programs(schema, table).items():
        for stock, fast in PAIRS:
            a, grads_a = loss_and_grads(stock, program, data, WEIGHTS[weights], particles, validate=False)
            b, grads_b = loss_and_grads(fast, program, data, WEIGHTS[weights], particles, validate=False)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"{name} {stock.__name__} pyro {pyro.__version__}")
            for ga, gb in zip(grads_a, grads_b):
                assert (ga is None) == (gb is None)
                if ga is not None:
                    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-7)


def test_with_validation_on_they_are_pyros_own(schema, table):
    program, data = programs(schema, table)["Var-T-JEPA"]
    for stock, fast in PAIRS:
        a, _ = loss_and_grads(stock, program, data, WEIGHTS["all one"], 1, validate=True)
        b, _ = loss_and_grads(fast, program, data, WEIGHTS["all one"], 1, validate=True)
        assert torch.equal(a, b)


def test_make_elbo_names_the_estimators():
    assert type(make_elbo("trace")) is SyncFreeTrace_ELBO and type(make_elbo("meanfield")) is SyncFreeTraceMeanField_ELBO
    with pytest.raises(ValueError, match=r"elbo must be one of \['meanfield', 'trace'\]"):
        make_elbo("svi")
