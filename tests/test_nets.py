"""FID Inception and VGG-19 ports: sizes, shapes, dtypes, loading errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.nets import convert
from jaxl2i.nets import inception_fid
from jaxl2i.nets import vgg19
from jaxl2i.nets import weights


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_counts():
  # reference/README.md: pytorch-fid InceptionV3([3]) 21,785,568 parameters;
  # torchvision VGG-19 features 20,024,384.
  inc = inception_fid.variable_shapes()
  assert set(inc) == {'params', 'batch_stats'}
  assert _count(inc['params']) == 21_785_568
  vgg = vgg19.variable_shapes()
  assert set(vgg) == {'params'} and len(vgg['params']) == 16
  assert _count(vgg['params']) == 20_024_384
  for leaf in jax.tree.leaves((inc, vgg)):
    assert leaf.dtype == jnp.float32


@pytest.mark.parametrize('shape,dtype', [((2, 64, 48, 3), jnp.uint8),
                                         ((3, 320, 320, 3), jnp.bfloat16)])
def test_inception_output_shape_is_f32(shape, dtype):
  out = jax.eval_shape(
      lambda v, x: inception_fid.InceptionV3FID().apply(v, x),
      inception_fid.variable_shapes(), jax.ShapeDtypeStruct(shape, dtype))
  assert out.shape == (shape[0], 2048) and out.dtype == jnp.float32


def _eqns(jaxpr):
  """All equations of a jaxpr, including those of nested (p)jit bodies."""
  for e in jaxpr.eqns:
    yield e
    for v in e.params.values():
      inner = getattr(v, 'jaxpr', v)
      if hasattr(inner, 'eqns'):
        yield from _eqns(inner)


def test_inception_convs_use_highest_precision():
  x = jnp.zeros((1, 75, 75, 3), jnp.bfloat16)
  net = inception_fid.InceptionV3FID(resize_input=False)
  with jax.default_matmul_precision('bfloat16'):
    jaxpr = jax.make_jaxpr(net.apply)(inception_fid.variable_shapes(), x)
  convs = [e for e in _eqns(jaxpr.jaxpr)
           if e.primitive.name == 'conv_general_dilated']
  assert len(convs) == 94  # Every conv of the network.
  for e in convs:
    assert e.params['precision'] == (jax.lax.Precision.HIGHEST,) * 2
    assert e.params['preferred_element_type'] in (None, jnp.float32)
    assert all(v.aval.dtype == jnp.float32 for v in e.invars)


def test_resize_identity_and_constant():
  x = jax.random.uniform(jax.random.key(0), (1, 299, 299, 3))
  assert inception_fid.resize_bilinear(x, (299, 299)) is x
  for n_in, n_out in ((64, 299), (320, 299), (5, 3)):
    m = inception_fid._bilinear_matrix(n_in, n_out)  # pylint: disable=protected-access
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)  # Rows sum to 1.
    assert (m >= 0).all() and (np.count_nonzero(m, axis=1) <= 2).all()


def test_vgg_taps_shapes_and_early_stop():
  x = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)
  variables = vgg19.variable_shapes()
  out = jax.eval_shape(
      lambda v, x: vgg19.VGG19Features().apply(v, x, vgg19.TAP_NAMES),
      variables, x)
  assert set(out) == set(vgg19.TAP_NAMES) and len(out) == 37
  assert out['relu1_1'].shape == (2, 32, 48, 64)
  assert out['pool1'].shape == (2, 16, 24, 64)
  assert out['relu3_4'].shape == (2, 8, 12, 256)
  assert out['relu5_4'].shape == (2, 2, 3, 512)
  assert out['pool5'].shape == (2, 1, 1, 512)
  shallow = jax.eval_shape(
      lambda k, x: vgg19.VGG19Features().init(k, x, ('relu1_2',)),
      jax.random.key(0), x)
  assert sorted(shallow['params']) == ['conv1_1', 'conv1_2']
  with pytest.raises(ValueError, match='Unknown VGG-19 taps'):
    vgg19.VGG19Features().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                               ('relu6_1',))


def test_vgg_compute_dtype():
  variables = vgg19.init_variables()
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3), minval=-1.0)
  taps = ('relu1_1', 'relu2_1')

  @jax.jit
  def run(v, x):
    return (vgg19.VGG19Features().apply(v, x, taps),
            vgg19.VGG19Features(dtype=jnp.bfloat16).apply(v, x, taps))

  f32, bf16 = run(variables, x)
  for t in taps:
    assert bf16[t].dtype == jnp.bfloat16 and f32[t].dtype == jnp.float32
    ref = np.asarray(f32[t])
    err = np.abs(np.asarray(bf16[t], np.float32) - ref).max()
    assert err <= 0.05 * np.abs(ref).max() and np.abs(ref).max() > 0


def test_vgg_imagenet_normalize():
  variables = vgg19.init_variables()
  x = jax.random.uniform(jax.random.key(2), (1, 8, 8, 3))
  normed = (x - np.array(vgg19.IMAGENET_MEAN)) / np.array(vgg19.IMAGENET_STD)
  got, want = jax.jit(lambda v: (
      vgg19.VGG19Features(imagenet_normalize=True).apply(v, x, ('conv1_1',)),
      vgg19.VGG19Features().apply(v, normed, ('conv1_1',))))(variables)
  np.testing.assert_allclose(got['conv1_1'], want['conv1_1'], atol=1e-5)


def test_vgg_converter_layout():
  rng = np.random.default_rng(0)
  sd, idx = {}, 0
  for kind, name, i in vgg19.LAYERS:
    if kind != 'conv':
      continue
    k = vgg19.variable_shapes()['params'][name]['kernel'].shape
    sd[f'features.{i}.weight'] = rng.normal(size=(k[3], k[2], 3, 3))
    sd[f'features.{i}.bias'] = rng.normal(size=(k[3],))
    idx += 1
  sd['classifier.0.weight'] = np.zeros((4, 4))
  params = vgg19.convert_vgg19(sd)['params']
  assert idx == 16 and len(params) == 16
  np.testing.assert_array_equal(
      params['conv3_2']['kernel'][1, 2, 5, 7],
      sd['features.12.weight'][7, 5, 1, 2].astype(np.float32))
  np.testing.assert_array_equal(params['conv5_4']['bias'],
                                sd['features.34.bias'].astype(np.float32))
  del sd['features.34.bias']
  with pytest.raises(ValueError, match='features.34'):
    vgg19.convert_vgg19(sd)


def test_inception_converter_rejects_incomplete():
  sd = {'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3), np.float32)}
  with pytest.raises(ValueError, match='missing'):
    inception_fid.convert_inception(sd)


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path))
  monkeypatch.setenv('JAXL2I_OFFLINE', '1')
  return tmp_path


@pytest.mark.parametrize('load,name', [
    (inception_fid.load_inception, inception_fid.WEIGHTS_NAME),
    (vgg19.load_vgg19, vgg19.WEIGHTS_NAME)])
def test_missing_weights_error(empty_offline_cache, load, name):
  with pytest.raises(weights.WeightsUnavailableError) as e:
    load()
  msg = str(e.value)
  assert name in msg and weights.get(name).url in msg
  assert str(empty_offline_cache / name) in msg
  assert 'python -m jaxl2i.nets.convert' in msg
  with pytest.raises(weights.WeightsUnavailableError):
    convert.convert(name)


def test_wrong_src_is_rejected(empty_offline_cache, tmp_path):
  bad = tmp_path / 'not_vgg.pth'
  bad.write_bytes(b'junk')
  with pytest.raises(weights.WeightsChecksumError):
    convert.convert('vgg19', str(bad))
  assert not (empty_offline_cache / vgg19.WEIGHTS_NAME).exists()


@pytest.mark.parametrize('load,shapes', [
    (inception_fid.load_inception, inception_fid.variable_shapes),
    (vgg19.load_vgg19, vgg19.variable_shapes)])
def test_allow_random(empty_offline_cache, load, shapes):
  del empty_offline_cache
  variables, is_random = load(allow_random=True)
  assert is_random is True
  got = jax.tree.map(lambda a: (a.shape, a.dtype), variables)
  want = jax.tree.map(lambda a: (a.shape, a.dtype), shapes())
  assert got == want
