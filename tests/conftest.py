import pyro
import pytest
import torch

from pyro_jepa.data.tabular import TabularData, TabularSchema


@pytest.fixture(autouse=True)
def _pyro_defaults():
    """Validation on (training turns it off for speed), a fixed seed, no global param-store state."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


@pytest.fixture
def schema() -> TabularSchema:
    return TabularSchema(
        numerical=tuple(f"n{i}" for i in range(5)),
        categorical=("c0", "c1"),
        cardinalities=(3, 5),
        label="y",
        classes=("a", "b"),
    )


def make_table(schema: TabularSchema, n: int, seed: int = 0) -> TabularData:
    """A small table whose numerical features and first category depend on the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    num = torch.randn(n, schema.n_numerical, generator=g) + 1.5 * y[:, None]
    cats = [
        (y + torch.randint(0, 2, (n,), generator=g)).clamp(max=card - 1)
        if j == 0
        else torch.randint(0, card, (n,), generator=g)
        for j, card in enumerate(schema.cardinalities)
    ]
    rows = torch.cat([num, torch.stack(cats, 1).float()], 1)
    return TabularData(rows, y, schema)


@pytest.fixture
def table(schema) -> TabularData:
    return make_table(schema, 64)


@pytest.fixture
def keep_torch_threads():
    """Code under test may set torch's thread count for the whole process; give it back after the test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(keep_torch_threads):
    """Tiny convolutions: one thread avoids OpenMP spin-waiting on a shared 2-core machine (50x there)."""
    torch.set_num_threads(1)
