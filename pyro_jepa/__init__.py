"""pyro_jepa: joint-embedding self-supervised learning as probabilistic programs on Pyro."""

__version__ = "0.1.0"
