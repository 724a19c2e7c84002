"""The hub interface on texts longer than the model's positions: ``score`` slides eval-lm's context window (the same
total as ``fairseq-eval-lm --context-window`` on the same text), ``sample`` continues the prompt's end and gives the
whole prompt back, and no call returns fewer results than inputs."""

import math
import re

import pytest
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import eval_lm, preprocess, train

from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel

from .helpers import LM_TRAIN, SAMPLE, TINY_LM, USER_DIR, run_cli

pytestmark = pytest.mark.cli

POSITIONS, CONTEXT = 128, 64


@pytest.fixture(scope="module")
def long_text_model(lm_data, tmp_path_factory):
    """A 128-position model and a 600-word text binarised with its dictionary as the test split of ``bin``."""
    import gzip

    root = tmp_path_factory.mktemp("long")
    args = [a if a != "64" else str(POSITIONS) for a in LM_TRAIN]  # --tokens-per-sample 128
    run_cli(train.cli_main, [lm_data, *args, *TINY_LM, "--max-update", "3", "--save-dir", root / "ck",
                             "--no-epoch-checkpoints"])
    with gzip.open(SAMPLE / "test.txt.gz", "rt") as f:
        words = f.read(20_000).split()[:600]
    text = " ".join(words)
    (root / "long.txt").write_text(text + "\n")
    run_cli(preprocess.cli_main, ["--only-source", "--testpref", root / "long.txt", "--srcdict", lm_data / "dict.txt",
                                  "--destdir", root / "bin", "--workers", "1"])
    hub = AdaptiveLanguageModel.from_pretrained(str(root / "ck"), "checkpoint_last.pt", str(root / "bin"),
                                                user_dir=USER_DIR).eval()
    return hub, text, root


def test_score_of_a_long_text_equals_eval_lm_with_a_context_window(long_text_model, caplog):
    hub, text, root = long_text_model
    assert hub.positions() == POSITIONS and len(hub.encode(text)) > POSITIONS
    got = hub.score(text, context_window=CONTEXT)
    scores = got["positional_scores"]
    assert scores.numel() == 600 and math.isfinite(float(scores.sum()))
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), [
        str(root / "bin"), "--user-dir", USER_DIR, "--path", str(root / "ck" / "checkpoint_last.pt"), "--cpu",
        "--gen-subset", "test", "--tokens-per-sample", str(POSITIONS), "--context-window", str(CONTEXT),
        "--max-tokens", "4096", "--output-word-stats"])
    with caplog.at_level("INFO"):
        result = eval_lm.main(convert_namespace_to_omegaconf(args))
    total = -result["loss"] * math.log(2) * 601  # eval-lm scores the 600 words and the line's </s> (base 2, mean)
    eos = float(re.search(r"</s>\t1\t(\S+)\t", caplog.text).group(1))  # the hub scores the words alone
    assert abs(float(scores.sum()) - (total - eos)) < 1e-3
    # a narrower context is another (finite) score: the window is really used
    assert abs(float(hub.score(text, context_window=8)["positional_scores"].sum() - scores.sum())) > 1e-3


def test_no_result_is_dropped_and_long_prompts_continue(long_text_model):
    hub, text, _ = long_text_model
    both = hub.score([text, "the people of the United States"], skip_invalid_size_inputs=True)
    assert len(both) == 2 and both[0]["positional_scores"].numel() == 600
    alone = hub.score("the people of the United States")
    assert both[1]["positional_scores"].tolist() == pytest.approx(alone["positional_scores"].tolist(), abs=1e-5)
    out = hub.sample(text, sampling=True, sampling_topk=10, max_len_b=8, seed=1)
    prompt = hub.decode(hub.encode(text))  # the text as the dictionary reads it (<unk> for unknown words)
    assert out.startswith(prompt) and len(out.split()) > 600
    with pytest.raises(ValueError, match="context_window=128 must lie in"):
        hub.score(text, context_window=POSITIONS)
