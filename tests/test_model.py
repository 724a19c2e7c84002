"""The registered model and task: parameter counts, build-time errors, cutoff derivation, decoding."""

import shutil

import pytest
import torch
from fairseq import tasks
from fairseq.data import Dictionary

from fairseq_adaptive.models.counting import count_parameters
from fairseq_adaptive.models.lm_base import band_fractions
from fairseq_adaptive.tasks.adaptive_language_modeling import derive_cutoffs

from .helpers import build_lm, steps_with_and_without_autocast, train_args

# Table 3 of Baevski & Auli 2019, WikiText-103 (267,744-entry dictionary): millions of parameters.
TABLE3 = {
    "adaptive_lm_wiki103_sm": 476.8,
    "adaptive_lm_wiki103_sm_t": 339.7,
    "adaptive_lm_wiki103_asm": 263.1,
    "adaptive_lm_wiki103_adp": 291.3,
    "adaptive_lm_wiki103_adp_t": 246.9,
}


@pytest.mark.parametrize("arch,paper", sorted(TABLE3.items()))
def test_table3_parameter_counts(arch, paper):
    n = count_parameters(build_lm(arch, vocab=267744).model)
    assert abs(n / 1e6 - paper) < 0.1, f"{arch}: {n / 1e6:.2f}M vs the paper's {paper}M"


def test_adp_t_closed_form():
    """ADP-T = 16 pre-norm blocks + adaptive input + the head's cluster logits (everything else shared)."""
    d, ffn, layers, V = 1024, 4096, 16, 267744
    block = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    bands = [(20000, 1024), (40000, 256), (V - 60000, 64)]
    adaptive_input = sum(n * w + w * d for n, w in bands)
    model = build_lm("adaptive_lm_wiki103_adp_t", vocab=V).model
    assert count_parameters(model) == layers * block + adaptive_input + 2 * d


def test_auto_cutoffs_follow_coverage(lm_data):
    model, _, args = build_lm(flags=["--cutoff-coverage", "0.8,0.95"], data=lm_data)
    d = Dictionary.load(str(lm_data / "dict.txt"))
    cut = derive_cutoffs(d, [0.8, 0.95])
    assert model.decoder.embed_tokens.embedding.cutoff[:-1] == cut
    assert model.decoder.scorer.softmax.cutoff[:-1] == cut
    assert all(c % 8 == 0 for c in cut)
    fractions = band_fractions(d, cut)
    assert fractions[0] >= 0.8 and fractions[0] + fractions[1] >= 0.95
    # the boundary is the smallest multiple of 8 reaching the target: 8 entries fewer falls short
    assert band_fractions(d, [cut[0] - 8])[0] < 0.8
    assert args.adaptive_input_cutoff == ",".join(map(str, cut))  # stored numerically in the checkpoint config


BAD_INPUTS = [
    (["--adaptive-input-cutoff", "300,100", "--adaptive-softmax-cutoff", "300,100"], "strictly increasing"),
    (["--adaptive-input-cutoff", "100,999999", "--adaptive-softmax-cutoff", "100,999999"], "dictionary size"),
    (["--adaptive-input-cutoff", "100,300", "--adaptive-softmax-cutoff", "100,400"], "equal to --adaptive-input-cutoff"),
    (["--adaptive-input-factor", "4"], "--adaptive-softmax-factor .* equal to --adaptive-input-factor"),
    (["--adaptive-input-cutoff", "100,x", "--adaptive-softmax-cutoff", "100,x"], "not a comma-separated list"),
    (["--cutoff-coverage", "0.9,0.5"], "increasing fractions"),
    (["--cutoff-coverage", "90%"], "not a comma-separated list of fractions"),
    (["--cutoff-coverage", "0.99999999"], "puts a band boundary at 3160, past the last word of the 3160-entry dictionary"),
    (["--decoder-output-dim", "16"], "ends at --decoder-embed-dim \\(32\\): --decoder-output-dim \\(16\\) must equal it"),
    (["--define-dim", "16", "--decoder-output-dim", "32"], "ends at --define-dim \\(16\\): --decoder-output-dim"),
    (["--define-dim", "16", "--define-proj-dim", "10"], "DeFINE layer 1 has 4 groups, which do not split its "
                                                         "projected width d 10: choose --define-max-groups"),
    (["--define-dim", "16", "--define-layers", "1"], "--define-layers=1: DeFINE needs at least 2 grouped layers"),
    (["--define-dim", "16", "--define-expand-dim", "8"], "--define-expand-dim=8 is narrower than --define-dim=16"),
    (["--define-dim", "16", "--define-expand-dim", "20", "--define-proj-dim", "24"],
     "--define-expand-dim=20 must be at least the projected width d=24"),
    (["--define-dim", "16", "--decoder-input-dim", "8"], "--decoder-input-dim=8 has no meaning with --define-dim"),
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS)
def test_bad_flags_fail_at_build_with_the_flag_named(lm_data, extra, message):
    with pytest.raises(ValueError, match=message):
        build_lm(flags=extra, data=lm_data)


def test_tie_proj_without_tied_weights(lm_data):
    with pytest.raises(ValueError, match="--tie-adaptive-proj needs --tie-adaptive-weights"):
        args = train_args(lm_data, "adaptive_language_modeling", "adaptive_lm_tiny")
        args.tie_adaptive_weights = False
        tasks.setup_task(args).build_model(args)


def test_unsorted_dictionary_is_refused_and_left_untouched(lm_data, tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(lm_data, data)
    lines = (data / "dict.txt").read_text().splitlines()
    lines[0], lines[5] = lines[5], lines[0]  # a rarer word before a frequent one
    (data / "dict.txt").write_text("\n".join(lines) + "\n")
    before = (data / "dict.txt").read_bytes()
    with pytest.raises(ValueError, match="not sorted by frequency"):
        build_lm(data=data)
    assert (data / "dict.txt").read_bytes() == before


def test_adaptive_input_without_cutoff_outside_our_task():
    with pytest.raises(ValueError, match="auto needs the dictionary's counts"):
        build_lm("adaptive_lm_tiny", vocab=500)  # fairseq's language_modeling task over a dictionary of 500


def test_incremental_decoding_equals_full_decoding(lm_data):
    torch.manual_seed(0)
    model = build_lm(flags=["--dropout", "0"], data=lm_data).model
    model.eval()
    tokens = torch.randint(4, len(model.decoder.dictionary), (2, 7))
    full = model.get_normalized_probs(model(tokens), log_probs=True)
    state = {}
    steps = []
    for t in range(tokens.size(1)):
        out = model.decoder(tokens[:, : t + 1], incremental_state=state)
        steps.append(model.get_normalized_probs(out, log_probs=True))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 7), atol=1e-5, rtol=1e-5)


def test_batch_size_invariance(lm_data):
    model = build_lm(data=lm_data).model
    model.eval()
    tokens = torch.randint(4, len(model.decoder.dictionary), (3, 6))
    together = model.get_normalized_probs(model(tokens), log_probs=True)
    alone = model.get_normalized_probs(model(tokens[1:2]), log_probs=True)
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


def test_full_softmax_loss_goes_through_the_engine_from_features(lm_data):
    """A full softmax's training loss: the criterion asks the decoder for features and scores them blockwise; the loss
    and every gradient equal F.cross_entropy over the materialised B x T x V logits."""
    from fairseq_adaptive.criterions.adaptive_cross_entropy import decoder_features

    torch.manual_seed(0)
    model = build_lm("adaptive_lm_define_std_tiny", ["--define-dim", "0", "--dropout", "0"], data=lm_data).model
    scorer = model.decoder.scorer
    assert scorer.spec.cutoff is None  # a full softmax
    tokens = torch.randint(4, 400, (2, 12))
    target = tokens.roll(-1, 1)
    target[1, -3:] = 1  # padding
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": None}}
    features = decoder_features(model, sample)[0]
    assert features.shape == (2, 12, model.decoder.embed_dim)  # features, not V-wide logits
    got = scorer.loss(features, target, ignore_index=1)[0]
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    logits = torch.nn.functional.linear(scorer.features(model(tokens)[0]), scorer.softmax.weight)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), target.view(-1), ignore_index=1,
                                            reduction="sum")
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(got, ref)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_causal_sdpa_is_honoured_with_a_hydra_config(lm_data):
    """fairseq's TransformerConfig drops unknown keys of a DictConfig (the hydra and dataclass route): the decoder
    reads --no-causal-sdpa itself."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from fairseq_adaptive.models.causal_attention import CausalDecoderLayer

    for flags, causal in (([], True), (["--no-causal-sdpa"], False)):
        args = train_args(lm_data, "adaptive_language_modeling", "adaptive_lm_tiny", flags)
        cfg = convert_namespace_to_omegaconf(args)
        model = tasks.setup_task(cfg.task).build_model(cfg.model)
        assert all(isinstance(layer, CausalDecoderLayer) == causal for layer in model.decoder.layers)


def test_causal_sdpa_matches_fairseq_attention(lm_data, monkeypatch):
    """The SDPA route and fairseq's masked attention: same outputs and gradients from the same weights; the route
    is taken for full sequences and left for padded batches and incremental decoding."""
    from fairseq.modules import MultiheadAttention

    from fairseq_adaptive.models.causal_attention import CausalSelfAttention

    torch.manual_seed(0)
    tokens = torch.randint(4, 400, (2, 9))
    runs = []
    for flag in ((), ("--no-causal-sdpa",)):
        model = build_lm(flags=["--dropout", "0", "--attention-dropout", "0", *flag], data=lm_data).model
        kinds = {type(layer.self_attn) for layer in model.decoder.layers}
        assert kinds == ({MultiheadAttention} if flag else {CausalSelfAttention})
        if runs:
            model.load_state_dict(runs[0][0])
        out = model(tokens)[0]
        out.pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((model.state_dict(), out.detach(), grads))
    torch.testing.assert_close(runs[0][1], runs[1][1], atol=1e-5, rtol=1e-5)
    assert runs[0][2].keys() == runs[1][2].keys()
    for name in runs[0][2]:
        torch.testing.assert_close(runs[0][2][name], runs[1][2][name], atol=1e-5, rtol=1e-4, msg=name)

    model = build_lm(flags=["--dropout", "0"], data=lm_data).model
    taken = []
    monkeypatch.setattr(CausalSelfAttention, "causal_forward",
                        lambda self, x, _f=CausalSelfAttention.causal_forward: taken.append(1) or _f(self, x))
    model.eval()
    model(tokens)
    assert len(taken) == len(model.decoder.layers)
    padded = tokens.clone()
    padded[0, -2:] = model.decoder.padding_idx
    model(padded)
    model.decoder(tokens[:, :3], incremental_state={})
    assert len(taken) == len(model.decoder.layers), "padded or incremental calls must take fairseq's path"


def test_scoring_path_gathers_the_same_target_log_probs(lm_data):
    """fairseq's scorers call get_normalized_probs(sample=...) and gather the target: the stride-0 target-only
    result must give what gathering the full distribution gives."""
    model = build_lm(data=lm_data).model
    model.eval()
    tokens = torch.randint(4, len(model.decoder.dictionary), (3, 10))
    target = tokens.roll(-1, 1)
    out = model(tokens)
    full = model.get_normalized_probs(out, log_probs=True)
    scored = model.get_normalized_probs(out, log_probs=True, sample={"target": target})
    assert scored.shape == full.shape and scored.stride(-1) == 0  # no vocabulary-wide storage
    expected = full.gather(2, target.unsqueeze(-1))
    torch.testing.assert_close(scored.gather(2, target.unsqueeze(-1)), expected, atol=1e-5, rtol=1e-5)
    probs = model.get_normalized_probs(out, log_probs=False, sample={"target": target})
    torch.testing.assert_close(probs.gather(2, target.unsqueeze(-1)), expected.exp(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("quiet", [False, True])
def test_criterion_logs_cluster_stats_after_the_main_metrics(lm_data, quiet):
    from fairseq import metrics

    from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion

    model, task, _ = build_lm(data=lm_data)
    criterion = AdaptiveCrossEntropyCriterion(task, sentence_avg=False, no_cluster_stats=quiet)
    tokens = torch.randint(4, len(task.dictionary), (2, 16))
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": None}, "target": tokens.roll(-1, 1), "ntokens": 32}
    loss, _, log = criterion(model, sample)
    assert any(k.startswith("cluster") for k in log) != quiet
    with metrics.aggregate(new_root=True) as agg:
        AdaptiveCrossEntropyCriterion.reduce_metrics([log])
        keys = list(agg.get_smoothed_values())
    if quiet:
        assert not any(k.startswith(("loss_c", "frac_c")) for k in keys)
    else:
        assert keys.index("loss") < keys.index("ppl") < keys.index("loss_c0")
        assert sum(agg.get_smoothed_values()[f"frac_c{i}"] for i in range(3)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("arch,extra", [("adaptive_lm_tiny", ()), ("adaptive_lm_define_tiny", ()),
                                        ("adaptive_lm_define_std_tiny", ("--define-dim", "0"))])
def test_training_step_under_autocast(lm_data, arch, extra):
    """fairseq's ``--amp`` runs the step under autocast with fp32 weights (CUDA, fp16); CPU autocast (bf16) takes the
    same code: the loss stays within bf16 rounding of the fp32 step and every gradient is fp32 and close to it."""
    from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion

    torch.manual_seed(0)
    no_dropout = ["--dropout", "0", "--define-dropout", "0", "--define-embed-dropout", "0"]
    model, task, _ = build_lm(arch, [*no_dropout, *extra], data=lm_data)
    criterion = AdaptiveCrossEntropyCriterion(task, sentence_avg=False)
    tokens = torch.randint(4, len(task.dictionary), (4, 24))
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": None}, "target": tokens.roll(-1, 1), "ntokens": 96}
    (ref_loss, ref_grads), (amp_loss, amp_grads) = steps_with_and_without_autocast(model, criterion, sample)
    assert amp_loss.dtype == torch.float32
    torch.testing.assert_close(amp_loss, ref_loss, rtol=2e-2, atol=0)
    largest = max(g.norm() for g in ref_grads)
    for ref, got in zip(ref_grads, amp_grads):
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        if ref.norm() > 1e-3 * largest:  # smaller ones are within bf16 noise of zero
            assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0) > 0.98
