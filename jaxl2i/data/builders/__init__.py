"""jaxl2i's own TFDS builders, imported lazily by name.

Importing a builder module registers its builder with TFDS. This package does
not import TensorFlow: `import_builder(name)` imports the one module needed.
jaxl2i builders use their own names, distinct from TFDS's built-in datasets
(TFDS has a `cityscapes` of its own; jaxl2i's will not be called that).
"""
import importlib
from types import ModuleType

from jaxl2i.data.errors import DatasetUnavailableError

# Dataset name (as in `data.name`, before any '/config') -> builder module.
KNOWN = {
    'synthetic_scenes': 'jaxl2i.data.builders.synthetic_scenes',
    'coco_stuff_layout': 'jaxl2i.data.builders.coco_stuff_layout',
    'visual_genome_layout': 'jaxl2i.data.builders.visual_genome_layout',
    # Label-map datasets (SPADE / pix2pix / CRN inputs).
    'cityscapes_maps': 'jaxl2i.data.builders.cityscapes_maps',
    'ade20k_maps': 'jaxl2i.data.builders.ade20k_maps',
    'coco_stuff_maps': 'jaxl2i.data.builders.coco_stuff_maps',
}


def import_builder(name: str) -> ModuleType:
  """Imports (and so registers) the builder module of dataset `name`.

  Args:
    name: dataset name, optionally with a config ('synthetic_scenes/tiny') or
      a version ('synthetic_scenes/tiny:1.0.0').

  Raises:
    DatasetUnavailableError: jaxl2i has no builder for that name.
  """
  base = name.split('/')[0].split(':')[0]
  if base not in KNOWN:
    raise DatasetUnavailableError(
        f"jaxl2i has no builder for dataset '{base}' yet (available: "
        f"{', '.join(sorted(KNOWN))}). jaxl2i only reads datasets through "
        'its own builders in jaxl2i/data/builders/ (TFDS datasets of the '
        'same name are not used); set data.name to one of the available '
        'ones, e.g. synthetic_scenes/res64.')
  return importlib.import_module(KNOWN[base])
