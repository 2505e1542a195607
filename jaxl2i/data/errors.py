"""Exceptions of the data layer (no TensorFlow import here)."""


class DatasetUnavailableError(RuntimeError):
  """A dataset jaxl2i cannot provide: no builder yet, or files not fetched."""
