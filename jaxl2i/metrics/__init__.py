"""Evaluation metrics: FID / KID, SceneFID, mask entropy, diversity score.

Submodules are imported lazily by the caller (`from jaxl2i.metrics import
fid`), so importing the package does not pull in JAX or SciPy.
"""
