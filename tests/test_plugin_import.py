"""Importing the plugin leaves fairseq as it is: its batching function and its attention classes are the same objects
afterwards, and no object of fairseq's has its class reassigned."""

import subprocess
import sys

import pytest

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
