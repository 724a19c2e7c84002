"""Importing the plugin leaves fairseq as it is: its batching function and its attention classes are the same objects
afterwards, and no object of fairseq's has its class reassigned."""

import subprocess
import sys

import pytest
import torch

from .helpers import ROOT, build_lm

CHECK = """
import fairseq.data.data_utils as d
import fairseq.checkpoint_utils as c
import fairseq.modules.transformer_layer as layers
from fairseq.modules import MultiheadAttention
f, layer, attention, paths = d.batch_by_size, layers.TransformerDecoderLayerBase, MultiheadAttention, c.PathManager
before = dict(vars(MultiheadAttention))
import fairseq_adaptive
import fairseq.modules
assert d.batch_by_size is f, "batch_by_size replaced on import"
assert c.PathManager is paths, "checkpoint copies changed on import"
assert layers.TransformerDecoderLayerBase is layer and fairseq.modules.MultiheadAttention is attention
assert dict(vars(MultiheadAttention)) == before
print("untouched")
"""


@pytest.mark.cli
def test_importing_the_plugin_changes_nothing_in_fairseq():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "untouched" in done.stdout, done.stderr[-2000:]


def test_no_class_is_reassigned_in_the_package():
    sources = [p.read_text() for p in (ROOT / "fairseq_adaptive").rglob("*.py")]
    assert sources and not any("__class__ =" in s for s in sources)


def test_the_batching_fix_applies_when_our_model_is_built(lm_data):
    from fairseq.data import data_utils

    build_lm("adaptive_lm_tiny", data=lm_data)
    assert getattr(data_utils.batch_by_size, "_fairseq_adaptive_fix", False)
    from fairseq import checkpoint_utils

    assert checkpoint_utils.PathManager.copy.__qualname__ == "AtomicCopyPathManager.copy"


def test_token_blocks_read_under_numpy_2_as_under_numpy_1():
    """fairseq's TokenBlockDataset (generation, the hub, eval-lm's sentence modes) once our fixes are applied: no
    np.compat error and no unsigned wrap-around under numpy 2 (a sentence's first token's past target is padding and
    end of sentence, then nothing), no warning."""
    import warnings

    from fairseq.data import TokenBlockDataset

    from fairseq_adaptive import fairseq_fixes

    fairseq_fixes.apply()
    data = [torch.tensor([2]), torch.tensor([5, 2])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocks = TokenBlockDataset(data, [1, 2], block_size=None, pad=1, eos=2, break_mode="eos",
                                   include_targets=True)
        source, target, past = blocks[0]
        assert source.tolist() == [2] and target.tolist() == [2] and past.tolist() == [1, 2]
        assert [t.tolist() for t in blocks[1]] == [[2, 5], [5, 2], [1, 2]]
