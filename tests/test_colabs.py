"""Executes the Python cells of every notebook in colabs/ on the CPU.

Shell lines ('!pip ...') are skipped; the notebook reads JAXL2I_NOTEBOOK_* to
run its tiny variant in a temporary workdir.
"""

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'colabs', '*.ipynb')))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.setenv('JAXL2I_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('JAXL2I_REPO_DIR', ROOT)
  monkeypatch.setenv('JAXL2I_NOTEBOOK_WORKDIR', str(tmp_path / 'run'))
  monkeypatch.setenv('JAXL2I_NOTEBOOK_DATA_DIR', str(tmp_path / 'tfds'))
  notebook = json.load(open(path))
  scope = {'__name__': '__notebook__'}
  for i, cell in enumerate(notebook['cells']):
    if cell['cell_type'] != 'code':
      continue
    source = ''.join(line for line in cell['source']
                     if not line.lstrip().startswith('!'))
    try:
      exec(compile(source, f'{os.path.basename(path)}[{i}]', 'exec'), scope)  # pylint: disable=exec-used
    except Exception as e:
      raise AssertionError(f'cell {i} of {path} failed: {e!r}') from e
  assert scope['picture'].size[0] > 0
  assert scope['report']['metrics'], scope['report']
