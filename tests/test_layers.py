"""The house has one-way layers: data -> nn/distributions -> models -> infer/train -> evaluate -> uncertainty/report -> experiments."""

import subprocess
import sys

import pytest

from tests.test_experiment import ROOT


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        ("import pyro_jepa.models", {"arviz", "pandas", "matplotlib"}),
        ("import pyro_jepa.nn", {"pyro", "arviz", "pandas", "matplotlib"}),
        ("import pyro_jepa.train", {"arviz", "matplotlib"}),
        ("import pyro_jepa.evaluate", {"arviz", "matplotlib"}),
        ("import pyro_jepa.run", {"arviz"}),  # saved runs: pandas, no arviz until LoadedRun.sample_latents
        ("import pyro_jepa.sklearn", {"arviz"}),
        ("import pyro_jepa", {"torch", "pandas"}),  # pyro_jepa.load_run loads on first use
        ("import pyro_jepa.__main__", {"torch", "pyro", "arviz", "matplotlib"}),  # --help and usage errors stay fast
    ],
)
def test_lower_layers_do_not_load_higher_ones(statement, forbidden):
    assert not forbidden & loaded_after(statement)


def test_no_library_code_switches_the_matplotlib_backend():
    hits = [p for p in (ROOT / "pyro_jepa").rglob("*.py") if "matplotlib.use(" in p.read_text() or "import matplotlib.pyplot" in p.read_text()]
    assert not hits, hits
