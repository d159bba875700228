"""pyro_jepa: joint-embedding self-supervised learning as probabilistic programs on Pyro."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # pyro_jepa.load_run without importing torch and Pyro on ``import pyro_jepa``.
    if name == "load_run":
        from .run import load_run

        return load_run
    raise AttributeError(f"module 'pyro_jepa' has no attribute {name!r}")
