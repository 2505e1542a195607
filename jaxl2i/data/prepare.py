r"""Builds a jaxl2i dataset from its official files, once.

  python -m jaxl2i.data.prepare --dataset=coco_stuff_layout \
      --manual_dir=$COCO [--data_dir=$DATA]

Reads the files users downloaded into --manual_dir (nothing is downloaded)
and writes TFRecords under --data_dir (TFDS default ~/tensorflow_datasets);
training then reads them with data.name=<dataset> and data.data_dir=$DATA.
Missing files stop the build with one message naming each file, where to
download it and where to put it. `tfds build` would need apache-beam; this
command does not.
"""

import sys
import time

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', None, "Dataset name, e.g. 'coco_stuff_layout' "
                    "or 'visual_genome_layout' (optionally /config).")
flags.DEFINE_string('manual_dir', None, 'Folder with the official files.')
flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: TFDS default).')


def prepare(dataset: str, manual_dir: str | None,
            data_dir: str | None = None):
  """Builds `dataset` from `manual_dir`; returns the prepared builder."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from jaxl2i.data import builders
  from jaxl2i.data import pipeline  # hides GPUs from TF
  # pylint: enable=g-import-not-at-top
  del pipeline
  builders.import_builder(dataset)
  builder = tfds.builder(dataset, data_dir=data_dir)
  if builder.is_prepared():
    logging.info('%s is already prepared in %s', dataset, builder.data_dir)
    return builder
  start = time.perf_counter()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  logging.info('built %s in %s in %.0f s: %s', dataset, builder.data_dir,
               time.perf_counter() - start,
               {k: v.num_examples for k, v in builder.info.splits.items()})
  return builder


def main(argv):
  del argv
  from jaxl2i.data.errors import DatasetUnavailableError  # pylint: disable=g-import-not-at-top
  try:
    prepare(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir)
  except DatasetUnavailableError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['dataset', 'manual_dir'])
  app.run(main)
