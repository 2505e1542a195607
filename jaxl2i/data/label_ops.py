"""Label-encoding ops of particular models, registered in `jaxl2i.data.ops`.

`cityscapes_crn_labels`: CRN's Cityscapes input (reference/crn.md §4,
official `helper.get_semantic_map` + `datasets/cityscapes.json`). CRN reads
the `gtFine_color.png` pictures and compares every pixel with the 19
train-id colours of its palette; a pixel of any other colour is void (the
20th channel, 1 − Σ of the others). The `cityscapes_maps` builder stores the
labelIds maps instead. Every labelId has one colour in cityscapesScripts'
labels.py, so the palette match is a table on labelIds: the 19 train-id
classes, plus 'polegroup' (the colour of 'pole') and 'license plate' (the
colour of 'car', never drawn in labelIds files), everything else void
(pitfall 10).
"""
import tensorflow as tf

from jaxl2i.data import ops

# The palette order of datasets/cityscapes.json = the train ids 0..18.
CRN_CLASS_NAMES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
    'truck', 'bus', 'train', 'motorcycle', 'bicycle', 'void')
CRN_VOID = 19
CRN_NUM_CLASSES = 20
# labelId (cityscapes_maps: 0..33, 34 = license plate) -> CRN class.
_CRN_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
    18: 5,    # polegroup: colour (153, 153, 153) of pole
    34: 13,   # license plate: colour (0, 0, 142) of car
}
NUM_LABEL_IDS = 35


def crn_table() -> list[int]:
  """CRN class of each labelId 0..34 (void = 19)."""
  return [_CRN_TRAIN_ID.get(i, CRN_VOID) for i in range(NUM_LABEL_IDS)]


@ops.register('cityscapes_crn_labels')
def cityscapes_crn_labels(key: str = 'label') -> ops.Op:
  """ex[key]: Cityscapes labelIds [H,W] int32 -> CRN classes 0..19.

  0..18 are the train ids (road … bicycle, CRN_CLASS_NAMES), 19 is void.
  Ids outside 0..34 are void too. One-hot the result with 20 classes to
  get CRN's 20-channel input (19 palette channels + void).
  """
  table = tf.constant(crn_table(), tf.int32)

  def op(ex):
    if key not in ex:
      return ex
    ids = tf.cast(ex[key], tf.int32)
    valid = (ids >= 0) & (ids < NUM_LABEL_IDS)
    mapped = tf.gather(table, tf.clip_by_value(ids, 0, NUM_LABEL_IDS - 1))
    return {**ex, key: tf.where(valid, mapped, CRN_VOID)}

  return op
