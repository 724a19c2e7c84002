"""Every hydra config under configs/ composes through fairseq's hydra setup (the schema fairseq-hydra-train
registers), builds a model whose parameter count equals the registered architecture it documents, and sets every model
field as that architecture does; the paper rows a config reaches by overrides (listed in its header) are checked the
same way against their own architectures; and every language-model config trains through fairseq-hydra-train."""

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from fairseq.dataclass.initialize import add_defaults, hydra_init
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fairseq_adaptive.models.counting import build_on_meta, count_parameters, dictionary_of_size

from .helpers import USER_DIR, build_translation, json_log, load_script, run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WIKITEXT103 = 267744  # fairseq's WikiText-103 dictionary (267,735 words, 4 specials, padded to a multiple of 8)
WIKITEXT103_BPE = 33337  # the paper's byte-pair units (32K merges) on WikiText-103
PTB = 10000  # Penn Treebank's words


class Paper(NamedTuple):
    """What a config reproduces: the registered architecture its header names, the dictionary size it is meant for,
    its task and optimizer, and how long it trains (updates, or epochs where it stops on those)."""

    arch: str
    vocab: int
    task: str
    optimizer: str
    max_update: int = 0
    max_epoch: int = 0


BAEVSKI = dict(task="adaptive_language_modeling", optimizer="nag", max_update=286000)  # fairseq's adaptive-input recipe
# Transformer-XL's WikiText-103 base recipe (run_wt103_base.sh), which our DeFINE Transformer configs also take
TRANSFORMER_XL = dict(optimizer="adam", max_update=200000)
TXL_LARGE = dict(task="bptt_lm", optimizer="adam", max_update=4000000)  # run_wt103_large.sh
MERITY_WT103 = dict(task="bptt_lm", optimizer="adam", max_epoch=14)  # the awd-lstm-lm README's WikiText-103 command
AWD_LSTM = dict(task="bptt_lm", optimizer="nt_asgd", max_epoch=500)  # the awd-lstm-lm README's PTB command
PAPER_CONFIGS = {
    "wikitext103_sm": Paper("adaptive_lm_wiki103_sm", WIKITEXT103, **BAEVSKI),
    "wikitext103_sm_t": Paper("adaptive_lm_wiki103_sm_t", WIKITEXT103, **BAEVSKI),
    "wikitext103_asm": Paper("adaptive_lm_wiki103_asm", WIKITEXT103, **BAEVSKI),
    "wikitext103_adp": Paper("adaptive_lm_wiki103_adp", WIKITEXT103, **BAEVSKI),
    "wikitext103_adp_t": Paper("adaptive_lm_wiki103_adp_t", WIKITEXT103, **BAEVSKI),
    "wikitext103_bpe": Paper("adaptive_lm_wiki103_bpe", WIKITEXT103_BPE, **BAEVSKI),
    "wikitext103_bpe_t": Paper("adaptive_lm_wiki103_bpe_t", WIKITEXT103_BPE, **BAEVSKI),
    "wikitext103_cnn": Paper("adaptive_lm_wiki103_cnn", WIKITEXT103, **BAEVSKI),
    "billion_word_adp_t": Paper("adaptive_lm_gbw_adp_t", 793472, **BAEVSKI),
    "wikitext103_define": Paper("adaptive_lm_wiki103_define", WIKITEXT103, "adaptive_language_modeling",
                                **TRANSFORMER_XL),
    "wikitext103_define_std": Paper("adaptive_lm_wiki103_define_std_n128", WIKITEXT103, "adaptive_language_modeling",
                                    **TRANSFORMER_XL),
    "wikitext103_txl_base": Paper("txl_wiki103_base", WIKITEXT103, "bptt_lm", **TRANSFORMER_XL),
    "wikitext103_txl_large": Paper("txl_wiki103_large", WIKITEXT103, **TXL_LARGE),
    "wikitext103_txl_n128": Paper("txl_wiki103_n128", WIKITEXT103, "bptt_lm", **TRANSFORMER_XL),
    "wikitext103_txl_define_n128": Paper("txl_wiki103_define_n128", WIKITEXT103, "bptt_lm", **TRANSFORMER_XL),
    "wikitext103_lstm_std": Paper("lstm_wiki103_std", WIKITEXT103, **MERITY_WT103),
    "wikitext103_lstm_adaptive": Paper("lstm_wiki103_adaptive", WIKITEXT103, **MERITY_WT103),
    "wikitext103_lstm_define": Paper("lstm_wiki103_define_n384", WIKITEXT103, **MERITY_WT103),
    "ptb_awd_lstm": Paper("lstm_awd_ptb", PTB, **AWD_LSTM),
    "ptb_awd_lstm_define": Paper("lstm_awd_ptb_define", PTB, **AWD_LSTM),
}


class Row(NamedTuple):
    """A paper row a config reaches by overrides (its header lists them): the registered architecture of the row,
    the overrides, and the command-line flags the architecture takes for the same row (Tables 4 and 6)."""

    arch: str
    overrides: tuple
    flags: tuple = ()


def _lstm_define_rows():
    """Table 1a's R3 and R5, Table 5's cells (k on R3, R4 or R5) and Tables 4 and 6 (on R4, the config itself)."""
    width = {3: 256, 7: 384, 11: 512}  # Table 1a: n = m grows with the depth N

    def depth(n):
        m = width[n]
        return () if n == 7 else (f"model.decoder_embed_dim={m}", f"model.define_dim={m}", f"model.define_layers={n}")

    rows = [Row(f"lstm_wiki103_define_n{width[n]}", depth(n)) for n in (3, 11)]
    rows += [Row(f"lstm_wiki103_define_N{n}_k{k}", depth(n) + (f"model.define_expand_dim={k}",))
             for n in width for k in (1024, 1536, 2048)]
    rows += [Row("lstm_wiki103_define_n384", (f"model.define_transform={t}", f"model.define_connection={c}"),
                 ("--define-transform", t, "--define-connection", c))  # Table 4
             for t, c in [("linear", "none"), ("glt", "none"), ("glt_shuffle", "none"), ("hgt", "none"),
                          ("hgt", "concat"), ("hgt", "mixer")]]
    return rows + [Row("lstm_wiki103_define_n384", ("model.define_connection=residual",),  # Table 6a
                       ("--define-connection", "residual")),
                   Row("lstm_wiki103_define_n384", ("model.define_no_reduce=true",), ("--define-no-reduce",))]  # 6b


OTHER_N = (64, 256, 384)
ROWS = {
    "wikitext103_define": [Row(f"adaptive_lm_wiki103_define_n{n}", (f"model.define_dim={n}",)) for n in OTHER_N]
    + [Row(f"adaptive_lm_wiki103_define_N{n}_k{k}", (f"model.define_layers={n}", f"model.define_expand_dim={k}"))
       for n in (3, 7, 11) for k in (1024, 1536, 2048)],
    "wikitext103_define_std": [Row(f"adaptive_lm_wiki103_define_std_n{n}", (f"model.define_dim={n}",))
                               for n in OTHER_N],
    "wikitext103_txl_base": [Row("txl_wiki103_base", ("model.shared_rel_bias=true",), ("--shared-rel-bias",))],
    "wikitext103_txl_n128": [Row(f"txl_wiki103_n{n}", (f"model.decoder_input_dim={n}",)) for n in OTHER_N],
    "wikitext103_txl_define_n128": [Row(f"txl_wiki103_define_n{n}", (f"model.define_dim={n}",)) for n in OTHER_N],
    "wikitext103_lstm_define": _lstm_define_rows(),
}
ROW_CASES = [(name, row) for name, rows in sorted(ROWS.items()) for row in rows]

# translation configs -> (registered architecture, joined dictionary size they are meant for)
TRANSLATION_CONFIGS = {
    "wmt14_en_de_define": ("adaptive_transformer_wmt_en_de_define", 32008),
    "wmt14_en_de_big_define": ("adaptive_transformer_wmt_en_de_big_define", 32008),
}


def compose_config(name, overrides=()):
    GlobalHydra.instance().clear()
    hydra_init(name)
    # version_base 1.1, as fairseq: a newer base turns hydra.experimental (used by fairseq) into errors
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.1"):
        cfg = compose(config_name=name, overrides=["task.data=/nonexistent", *overrides])
    add_defaults(cfg)
    return cfg


def header(name) -> str:
    return "".join(line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines(True) if line.startswith("#"))


def test_every_config_is_listed():
    runnable = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert runnable == set(PAPER_CONFIGS) | set(TRANSLATION_CONFIGS)


# registered architectures of this package that are no paper setting of their own: each model's defaults, the tiny
# and small bodies of the tests and CPU examples, and second names of a setting that has a config
NOT_A_PAPER_SETTING = {
    "adaptive_lm": "the model's defaults", "txl_lm": "the model's defaults", "adaptive_lstm_lm": "the model's defaults",
    "adaptive_transformer_small": "the README's CPU example",
    "adaptive_lm_wiki103": "adaptive_lm_wiki103_adp_t", "adaptive_lm_gbw": "adaptive_lm_gbw_adp_t",
    "adaptive_lm_wiki103_define_n128": "adaptive_lm_wiki103_define",
}


def test_every_paper_setting_with_an_architecture_has_a_config():
    """Every registered architecture of a paper setting is a config's (named in its header) or a row its header
    reaches by overrides."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    ours = {arch for arch, model in ARCH_MODEL_NAME_REGISTRY.items()
            if model in ("adaptive_lm", "txl_lm", "adaptive_lstm_lm", "adaptive_transformer")}
    settings = {arch for arch in ours if not arch.endswith("_tiny") and arch not in NOT_A_PAPER_SETTING}
    reached = ({paper.arch for paper in PAPER_CONFIGS.values()} | {row.arch for _, row in ROW_CASES}
               | {arch for arch, _ in TRANSLATION_CONFIGS.values()})
    assert settings - reached == set(), "registered paper settings without a config"


@pytest.mark.parametrize("name", sorted(TRANSLATION_CONFIGS))
def test_translation_config_composes_and_builds_the_registered_model(name):
    from fairseq import models

    arch, vocab = TRANSLATION_CONFIGS[name]
    cfg = compose_config(name)
    assert cfg.task._name == "translation" and cfg.criterion._name == "adaptive_label_smoothed_cross_entropy"
    d = dictionary_of_size(vocab)
    with torch.device("meta"):
        model = models.build_model(cfg.model, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    assert count_parameters(model) == count_parameters(build_translation(arch, vocab=vocab).model)


def same_value(config_value, arch_value) -> bool:
    if isinstance(config_value, (int, float)) and isinstance(arch_value, (int, float)):
        return float(config_value) == float(arch_value)
    return str(config_value) == str(arch_value) if None not in (config_value, arch_value) else config_value is arch_value


def fields_that_differ(model, arch, flags=()) -> dict:
    """Each field of the composed model config (YAML values, schema defaults for the rest) against what ``arch``
    (with command-line ``flags``) sets: ``{field: (config, architecture)}`` where they differ."""
    from fairseq import options
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY

    schema = MODEL_DATACLASS_REGISTRY[ARCH_MODEL_NAME_REGISTRY[arch]]
    assert model._name == ARCH_MODEL_NAME_REGISTRY[arch]
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       ["/nonexistent", "--task", "language_modeling", "--arch", arch, *flags])
    owned_elsewhere = {f.name for f in dataclasses.fields(schema)
                       if isinstance(f.default, str) and f.default.startswith("${")}  # II("task...") and the like
    owned_elsewhere.add("base_shuffle")  # fairseq's arch and schema disagree (False / 1); --base-layers is refused
    # a field the architecture leaves unset (None) takes the schema's default, as on the command line
    by_arch = {f.name: f.default if getattr(args, f.name, None) is None else getattr(args, f.name)
               for f in dataclasses.fields(schema) if f.name not in owned_elsewhere}
    return {name: (model.get(name), value) for name, value in by_arch.items()
            if not name.startswith("_") and not same_value(model.get(name), value)}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_config_sets_every_model_field_as_the_architecture_it_names(name):
    """Field by field: each field of the composed model config (YAML values, schema defaults for the rest) equals
    what the architecture named in the config's header sets, so a dropout or a width that differs fails."""
    arch = load_script("param_table").config_arch(CONFIGS / f"{name}.yaml")
    assert arch == PAPER_CONFIGS[name].arch
    differ = fields_that_differ(compose_config(name).model, arch)
    assert not differ, f"configs/{name}.yaml (config, --arch {arch}): {differ}"


@pytest.mark.parametrize("name, row", ROW_CASES, ids=[f"{n}-{r.arch}-{'-'.join(r.overrides)}" for n, r in ROW_CASES])
def test_override_in_a_header_gives_its_rows_model_field_by_field(name, row):
    """The other rows of a config's family, each by the overrides its header gives, against the row's own
    architecture (and flags), field by field."""
    text = header(name)
    for override in row.overrides:  # as KEY=VALUE or KEY=A|B|C in the header
        key, value = override.split("=")
        given = [found.rstrip(".").split("|") for found in re.findall(rf"{re.escape(key)}=([\w.|]+)", text)]
        assert any(value in values for values in given), f"configs/{name}.yaml's header does not give {override}"
    differ = fields_that_differ(compose_config(name, row.overrides).model, row.arch, row.flags)
    assert not differ, f"configs/{name}.yaml + {' '.join(row.overrides)} (config, --arch {row.arch}): {differ}"


@pytest.mark.parametrize("name", sorted(TRANSLATION_CONFIGS))
def test_translation_config_names_its_architecture_and_nothing_else(name):
    arch = load_script("param_table").config_arch(CONFIGS / f"{name}.yaml")
    assert arch == TRANSLATION_CONFIGS[name][0]
    model = compose_config(name).model
    assert model._name == arch and set(model) - {"_name"} == set()


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_config_composes_and_builds_the_papers_model(name):
    from fairseq import models

    paper = PAPER_CONFIGS[name]
    cfg = compose_config(name)
    assert cfg.task._name == paper.task and cfg.criterion._name == "adaptive_cross_entropy"
    assert cfg.optimizer._name == paper.optimizer
    assert (cfg.optimization.max_update, cfg.optimization.max_epoch) == (paper.max_update, paper.max_epoch)
    if paper.task == "bptt_lm":
        assert cfg.dataset.batch_size, "--task bptt_lm reads --batch-size streams"
    d = dictionary_of_size(paper.vocab)
    with torch.device("meta"):
        model = models.build_model(cfg.model, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    assert count_parameters(model) == count_parameters(build_on_meta(paper.arch, paper.vocab))


def test_awd_lstm_configs_keep_its_regularisers_and_optimiser():
    """AWD-LSTM's PTB command (lr 30, clip 0.25, weight decay 1.2e-6, nonmono 5, AR 2, TAR 1, 20 x 70), the same
    for DeFINE's row, which keeps AWD-LSTM's hyper-parameters."""
    for name in ("ptb_awd_lstm", "ptb_awd_lstm_define"):
        cfg = compose_config(name)
        assert (cfg.criterion.ar_alpha, cfg.criterion.tar_beta) == (2, 1)
        assert (cfg.optimizer.weight_decay, cfg.optimizer.nonmono, cfg.optimization.lr) == (1.2e-6, 5, [30.0])
        assert (cfg.optimization.clip_norm, cfg.dataset.batch_size, cfg.task.tokens_per_sample) == (0.25, 20, 70)
        assert cfg.lr_scheduler._name == "fixed" and not cfg.common.fp16


SHRINK = {
    "wikitext103_adp_t": [],
    "wikitext103_define": ["model.define_dim=16", "model.define_expand_dim=64", "model.define_max_groups=4",
                           "dataset.batch_size=8"],
}


@pytest.mark.cli
@pytest.mark.parametrize("name", sorted(SHRINK))
def test_fairseq_hydra_train_runs_a_paper_config_in_bf16(lm_data, tmp_path, name):
    """The real entry point on paper configs (shrunk by overrides), with the bf16 route the README gives."""
    import json
    import math
    import os
    import subprocess
    import sys

    overrides = [
        f"task.data={lm_data}", "common.cpu=true", "common.fp16=false", "common.bf16=true", "common.log_interval=1",
        "model.decoder_layers=1", "model.decoder_embed_dim=32", "model.decoder_ffn_embed_dim=64",
        "model.decoder_attention_heads=2", 'model.adaptive_input_cutoff="200,800"',
        'model.adaptive_softmax_cutoff="200,800"', "task.tokens_per_sample=64", "dataset.max_tokens=512",
        "dataset.num_workers=0", "optimization.max_update=3", "lr_scheduler.warmup_updates=1",
        f"checkpoint.save_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path}", *SHRINK[name],
    ]
    env = dict(os.environ, FAIRSEQ_ADAPTIVE_USER_DIR=str(CONFIGS.parent / "fairseq_adaptive"))
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")
    done = subprocess.run([exe, "--config-dir", str(CONFIGS), "--config-name", name, *overrides],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    records = [json.loads(line.split(" - ", 1)[1]) for line in out.splitlines() if "[train_inner]" in line]
    assert [int(r["num_updates"]) for r in records] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) for r in records)
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["common"]["bf16"] and not state["cfg"]["common"]["tpu"]


# Sizes for a CPU run of a few seconds on the tests' corpus (its dictionary is far smaller than WikiText-103's): the
# body shrunk, the bands moved inside the dictionary, DeFINE narrowed; the rest (task, criterion, optimizer,
# schedule, regularisers) is the config's own.
TINY_TRANSFORMER = ["model.decoder_layers=1", "model.decoder_embed_dim=32", "model.decoder_ffn_embed_dim=64",
                    "model.decoder_attention_heads=2", "task.tokens_per_sample=64", "dataset.max_tokens=512"]
TINY_TXL = ["model.decoder_layers=1", "model.decoder_embed_dim=32", "model.decoder_ffn_embed_dim=64",
            "model.decoder_attention_heads=2", "model.decoder_attention_head_dim=16", "model.mem_len=16",
            'model.adaptive_softmax_cutoff="200,800"', "task.tokens_per_sample=16", "dataset.batch_size=4"]
TINY_LSTM = ["model.decoder_embed_dim=32", "model.decoder_hidden_dim=64", "model.decoder_layers=2",
             "task.tokens_per_sample=16", "dataset.batch_size=4"]
BANDS = ['model.adaptive_input_cutoff="200,800"', 'model.adaptive_softmax_cutoff="200,800"']
TINY_DEFINE = ["model.define_dim=16", "model.define_expand_dim=64", "model.define_layers=3",
               "model.define_max_groups=4"]
NARROW_IO = ["model.decoder_input_dim=32", "model.decoder_output_dim=32"]
TRAIN_TINY = {
    "wikitext103_bpe": TINY_TRANSFORMER + NARROW_IO,
    "wikitext103_bpe_t": TINY_TRANSFORMER + NARROW_IO,
    "wikitext103_cnn": TINY_TRANSFORMER + ["model.character_embedding_dim=8", 'model.character_filters="[(1, 16), '
                                           '(2, 16)]"', 'model.adaptive_softmax_cutoff="200,800"'],
    "wikitext103_txl_base": TINY_TXL,
    "wikitext103_txl_large": TINY_TXL + ['model.adaptive_input_cutoff="200,800"'],
    "wikitext103_txl_n128": TINY_TXL + ["model.decoder_input_dim=16"],
    "wikitext103_txl_define_n128": TINY_TXL + TINY_DEFINE,
    "wikitext103_lstm_std": TINY_LSTM,
    "wikitext103_lstm_adaptive": TINY_LSTM + BANDS,
    "wikitext103_lstm_define": TINY_LSTM + BANDS + ["model.define_dim=32", "model.define_expand_dim=64",
                                                    "model.define_layers=3", "model.define_max_groups=4"],
    "ptb_awd_lstm": TINY_LSTM,
    "ptb_awd_lstm_define": TINY_LSTM + TINY_DEFINE,
}


# configs without a run of their own, for time (about a second each on two free cores): what they build trains in a
# sibling's run (SM and SM-T: BPE and BPE-T's full softmax over projections; ASM: the CNN row's adaptive softmax
# without adaptive input; ADP and Billion Word: ADP-T's bands; DeFINE over a plain table: the DeFINE LM's unit). To
# run one, give it its sibling's overrides (Billion Word also task.sample_break_mode=none: it trains on sentences, and
# the tests' corpus has five lines of thousands of words).
TRAINED_BY_A_SIBLING = {"wikitext103_sm": "wikitext103_bpe", "wikitext103_sm_t": "wikitext103_bpe_t",
                        "wikitext103_asm": "wikitext103_cnn", "wikitext103_adp": "wikitext103_adp_t",
                        "billion_word_adp_t": "wikitext103_adp_t", "wikitext103_define_std": "wikitext103_define"}


def test_every_language_model_config_has_a_training_run():
    """Every language-model config trains in a test: here (TRAIN_TINY), in the bf16 test (SHRINK), or, for time,
    through a sibling that builds the same kind of layers."""
    trained = set(TRAIN_TINY) | set(SHRINK)
    assert trained | set(TRAINED_BY_A_SIBLING) == set(PAPER_CONFIGS)
    assert set(TRAINED_BY_A_SIBLING.values()) <= trained


@pytest.mark.cli
@pytest.mark.parametrize("name", sorted(TRAIN_TINY))
def test_fairseq_hydra_train_runs_the_config_for_two_updates(lm_data, tmp_path, monkeypatch, name):
    """fairseq-hydra-train's entry point (in this process: one import of fairseq for all of them) on the config with
    its task, criterion, optimizer and schedule, the model shrunk: two updates with finite losses, a validation (its
    first batches), and a checkpoint that holds the config's task and optimizer."""
    import logging
    import math

    from fairseq_cli import hydra_train

    monkeypatch.chdir(tmp_path)  # hydra runs the job in hydra.run.dir; the test's cwd comes back afterwards
    monkeypatch.setenv("FAIRSEQ_ADAPTIVE_USER_DIR", USER_DIR)
    GlobalHydra.instance().clear()
    # hydra configures logging and fairseq adds a handler for --log-file: both undone afterwards
    loggers = [logging.getLogger(), logging.getLogger("fairseq_cli.train")]
    kept = [(logger.handlers[:], logger.level) for logger in loggers]
    try:
        run_cli(hydra_train.cli_main, [
            "--config-dir", CONFIGS, "--config-name", name, f"task.data={lm_data}", "common.cpu=true",
            "common.fp16=false", "common.log_interval=1", f"common.log_file={tmp_path / 'log.json'}",
            "optimization.max_update=2", "dataset.num_workers=0", "dataset.max_valid_steps=2",
            f"checkpoint.save_dir={tmp_path / 'ckpt'}", "checkpoint.no_epoch_checkpoints=true",
            f"hydra.run.dir={tmp_path}", *TRAIN_TINY[name]])
    finally:
        for logger, (handlers, level) in zip(loggers, kept):
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
    records = json_log(tmp_path / "log.json")
    train = [r for r in records if "num_updates" in r and "valid_loss" not in r and "train_loss" not in r]
    assert [int(r["num_updates"]) for r in train] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in train)
    assert any(math.isfinite(float(r.get("valid_loss", "nan"))) for r in records)
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["cfg"]["optimizer"]["_name"] == PAPER_CONFIGS[name].optimizer
    assert state["cfg"]["task"]["_name"] == PAPER_CONFIGS[name].task


@pytest.mark.cli
def test_fairseq_hydra_train_runs_the_translation_config(mt_data, tmp_path):
    """The DeFINE translation config through fairseq-hydra-train (shrunk by overrides: the legacy model takes its
    sizes as extra keys), then fairseq-generate on the checkpoint."""
    import os
    import subprocess
    import sys

    shrink = ["+model.encoder_layers=1", "+model.decoder_layers=1", "+model.encoder_embed_dim=32",
              "+model.decoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64", "+model.decoder_ffn_embed_dim=64",
              "+model.encoder_attention_heads=2", "+model.decoder_attention_heads=2", "+model.encoder_define_dim=16",
              "+model.decoder_define_dim=16", "+model.define_expand_dim=64", "+model.define_max_groups=4"]
    overrides = [f"task.data={mt_data}", "common.cpu=true", "common.fp16=false", "common.log_interval=1",
                 "dataset.max_tokens=1024", "dataset.num_workers=0", "optimization.max_update=3",
                 "lr_scheduler.warmup_updates=1", f"checkpoint.save_dir={tmp_path / 'ckpt'}",
                 f"hydra.run.dir={tmp_path}", *shrink]
    env = dict(os.environ, FAIRSEQ_ADAPTIVE_USER_DIR=str(CONFIGS.parent / "fairseq_adaptive"))
    bin_dir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bin_dir, "fairseq-hydra-train"), "--config-dir", str(CONFIGS),
                           "--config-name", "wmt14_en_de_define", *overrides],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert any(k.startswith("encoder.embed_tokens.embedding.layers.") for k in state["model"])
    gen = subprocess.run([os.path.join(bin_dir, "fairseq-generate"), str(mt_data), "--user-dir", env[
        "FAIRSEQ_ADAPTIVE_USER_DIR"], "--cpu", "--path", str(tmp_path / "ckpt" / "checkpoint_last.pt"),
                          "--max-tokens", "2048", "--max-len-b", "5", "--remove-bpe", "sentencepiece"],
                         capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0 and "Translated 61 sentences" in gen.stdout + gen.stderr, gen.stderr[-3000:]
