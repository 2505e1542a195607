"""Layout ops of the sg2im / LostGAN Visual Genome loader, registered in ops.

Importing this module registers `sg2im_select_objects` and
`add_image_object` with `jaxl2i.data.ops` (op strings in data.pp_train /
pp_eval). The LAMA Visual Genome pipeline, as the reference loader builds a
layout (LostGANs data/vg.py), is

  'decode', 'resize(S)', 'random_flip', 'sg2im_select_objects(10)',
  'add_image_object', 'pad_objects(11)'

(evaluation: 'sg2im_select_objects(10, randomize=False)'). The
`visual_genome_layout` builder stores objects in relationships first and the
count of those in `num_in_relations`.
"""
import tensorflow as tf

from jaxl2i.data import ops

Example = ops.Example


def _shuffle(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """A stateless random permutation of the 1-D tensor x."""
  keys = tf.random.stateless_uniform(tf.shape(x), seed)
  return tf.gather(x, tf.argsort(keys))


def _count(ex: Example) -> tf.Tensor:
  """Number of real objects: min(len(classes), num_objects)."""
  n = tf.shape(ex['classes'])[0]
  if 'num_objects' in ex:
    n = tf.minimum(n, tf.cast(ex['num_objects'], tf.int32))
  return n


@ops.register('sg2im_select_objects')
def sg2im_select_objects(max_objects: int = 10, randomize: bool = True
                         ) -> ops.Op:
  """The sg2im loader's choice of at most `max_objects` objects.

  Reads `num_in_relations` (the first objects take part in relationships;
  the field is removed). If more than max_objects - 1 objects are related,
  `max_objects` of them are taken; otherwise all related objects plus
  orphans up to max_objects - 1 in total (so a layout never has exactly
  max_objects objects unless enough are related — the reference's rule).
  randomize=True draws the subsets (and their order) from ex['_seed'] like
  the reference's `random.sample`; False takes them in stored order.
  Updates classes [K], boxes [K,4] and num_objects (K <= max_objects).
  """

  def op(ex):
    if 'num_in_relations' not in ex:
      raise KeyError('sg2im_select_objects needs num_in_relations (stored '
                     'by the visual_genome_layout builder)')
    ex = dict(ex)
    n = _count(ex)
    r = tf.minimum(tf.cast(ex.pop('num_in_relations'), tf.int32), n)
    related, orphans = tf.range(r), tf.range(r, n)
    if randomize:
      ex, seed = ops.next_seed(ex)
      s = tf.random.experimental.stateless_split(seed, num=2)
      related, orphans = _shuffle(related, s[0]), _shuffle(orphans, s[1])
    many = r > max_objects - 1
    take = tf.where(many, max_objects, r)
    extra = tf.where(many, 0, tf.minimum(max_objects - 1 - r, n - r))
    sel = tf.concat([related[:take], orphans[:extra]], axis=0)
    ex['classes'] = tf.gather(ex['classes'], sel)
    if 'boxes' in ex:
      ex['boxes'] = tf.gather(ex['boxes'], sel)
    ex['num_objects'] = tf.size(sel, out_type=tf.int32)
    return ex

  return op


@ops.register('add_image_object')
def add_image_object(class_id: int = 0) -> ops.Op:
  """Appends the `__image__` object: class `class_id`, box (0, 0, 1, 1).

  It follows the real objects (after truncation to num_objects) and counts
  as one (num_objects + 1; `pad_objects` then marks it valid in
  objects_mask). With class 0 it shares its id with padding, as in the
  reference (VG vocabulary row 0 = '__image__'); only the box and the
  objects_mask tell them apart.
  """

  def op(ex):
    ex = dict(ex)
    n = _count(ex)
    c = ex['classes'][:n]
    ex['classes'] = tf.concat([c, tf.constant([class_id], c.dtype)], 0)
    if 'boxes' in ex:
      b = ex['boxes'][:n]
      ex['boxes'] = tf.concat([b, tf.constant([[0., 0., 1., 1.]], b.dtype)],
                              0)
    ex['num_objects'] = n + 1
    return ex

  return op
