"""Layout ops of the sg2im / LostGAN Visual Genome loader, registered in ops.

Importing this module registers `sg2im_select_objects`, `add_image_object`
and `shuffle_objects` with `jaxl2i.data.ops` (op strings in data.pp_train /
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
def sg2im_select_objects(max_objects: int = 10, randomize: bool = True,
                         max_related: int = 0) -> ops.Op:
  """The sg2im loader's choice of at most `max_objects` objects.

  Reads `num_in_relations` (the first objects take part in relationships;
  the field is removed). If more than max_objects - 1 objects are related,
  `max_related` of them are taken (0: max_objects, sg2im's rule, so a
  layout never has exactly max_objects objects unless enough are related;
  Layout2Im's loader takes max_objects - 1); otherwise all related objects
  plus orphans up to max_objects - 1 in total. randomize=True draws the
  subsets (and their order) from ex['_seed'] like the reference's
  `random.sample`; False takes them in stored order. Updates classes [K],
  boxes [K,4] and num_objects (K <= max(max_objects, max_related)).
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
    take = tf.where(many, max_related or max_objects, r)
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


@ops.register('shuffle_objects')
def shuffle_objects() -> ops.Op:
  """A random order of the real objects (Layout2Im's loaders shuffle each
  example's objects every time it is read; its ConvLSTM sees that order).

  The first n = min(len(classes), num_objects) entries of classes and boxes
  are permuted with ex['_seed']; entries beyond n (the padded slots, when it
  runs after `pad_objects`) stay where they are, so `objects_mask` still
  holds. An `instance` map (object slot k has id k + 1) is relabelled with
  its objects; other ids are kept.
  """

  def op(ex):
    ex, seed = ops.next_seed(ex)
    ex = dict(ex)
    n = _count(ex)
    total = tf.shape(ex['classes'])[0]
    perm = tf.concat([_shuffle(tf.range(n), seed), tf.range(n, total)], 0)
    # tf.gather with a perm of dynamic length loses the static object axis
    # that pad_objects set; eval batches' padding needs it (pipeline).
    gather = lambda x: tf.ensure_shape(tf.gather(x, perm), x.shape)
    ex['classes'] = gather(ex['classes'])
    if 'boxes' in ex:
      ex['boxes'] = gather(ex['boxes'])
    if 'instance' in ex:
      ids = ex['instance']
      new_id = tf.gather(tf.math.invert_permutation(perm) + 1,
                         tf.clip_by_value(ids - 1, 0, total - 1))
      moved = (ids >= 1) & (ids <= n)
      ex['instance'] = tf.where(moved, tf.cast(new_id, ids.dtype), ids)
    return ex

  return op
