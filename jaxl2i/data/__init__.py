"""Data layer: TFDS builders (`builders/`), example ops (`ops.py`) and input
pipelines (`pipeline.py`). Import `jaxl2i.data.pipeline` / `jaxl2i.data.ops`
explicitly: they pull in TensorFlow, this package does not."""
from jaxl2i.data.errors import DatasetUnavailableError

__all__ = ['DatasetUnavailableError']
