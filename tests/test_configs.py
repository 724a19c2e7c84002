"""Every hydra config under configs/ composes through fairseq's hydra setup (the schema fairseq-hydra-train
registers) and builds a model whose parameter count equals the registered architecture it documents."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fairseq.dataclass.initialize import add_defaults, hydra_init
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel
from fairseq_adaptive.models.counting import count_parameters, dictionary_of_size

from .helpers import build_lm, build_translation, load_script

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# config -> (registered architecture it reproduces, dictionary size it is meant for, optimizer, updates)
BAEVSKI = ("nag", 286000)  # fairseq's WikiText-103 adaptive-input recipe
TRANSFORMER_XL = ("adam", 200000)  # Transformer-XL's WikiText-103 base recipe, which DeFINE's LMs follow
PAPER_CONFIGS = {
    "wikitext103_sm": ("adaptive_lm_wiki103_sm", 267744, *BAEVSKI),
    "wikitext103_sm_t": ("adaptive_lm_wiki103_sm_t", 267744, *BAEVSKI),
    "wikitext103_asm": ("adaptive_lm_wiki103_asm", 267744, *BAEVSKI),
    "wikitext103_adp": ("adaptive_lm_wiki103_adp", 267744, *BAEVSKI),
    "wikitext103_adp_t": ("adaptive_lm_wiki103_adp_t", 267744, *BAEVSKI),
    "billion_word_adp_t": ("adaptive_lm_gbw_adp_t", 793472, *BAEVSKI),
    "wikitext103_define": ("adaptive_lm_wiki103_define", 267744, *TRANSFORMER_XL),
    "wikitext103_define_std": ("adaptive_lm_wiki103_define_std_n128", 267744, *TRANSFORMER_XL),
}


def compose_config(name):
    GlobalHydra.instance().clear()
    hydra_init(name)
    # version_base 1.1, as fairseq: a newer base turns hydra.experimental (used by fairseq) into errors
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.1"):
        cfg = compose(config_name=name, overrides=["task.data=/nonexistent"])
    add_defaults(cfg)
    return cfg


# translation configs -> (registered architecture, joined dictionary size they are meant for)
TRANSLATION_CONFIGS = {
    "wmt14_en_de_define": ("adaptive_transformer_wmt_en_de_define", 32008),
    "wmt14_en_de_big_define": ("adaptive_transformer_wmt_en_de_big_define", 32008),
}


def test_every_config_is_listed():
    runnable = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert runnable == set(PAPER_CONFIGS) | set(TRANSLATION_CONFIGS)


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


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_config_sets_every_model_field_as_the_architecture_it_names(name):
    """Field by field: each field of the composed model config (YAML values, schema defaults for the rest) equals
    what the architecture named in the config's header sets, so a dropout or a width that differs fails."""
    import dataclasses

    from fairseq import options

    from fairseq_adaptive.models.adaptive_lm import AdaptiveLMConfig

    arch = load_script("param_table").config_arch(CONFIGS / f"{name}.yaml")
    assert arch == PAPER_CONFIGS[name][0]
    model = compose_config(name).model
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       ["/nonexistent", "--task", "language_modeling", "--arch", arch])
    owned_elsewhere = {f.name for f in dataclasses.fields(AdaptiveLMConfig)
                       if isinstance(f.default, str) and f.default.startswith("${")}  # II("task...") and the like
    owned_elsewhere.add("base_shuffle")  # fairseq's arch and schema disagree (False / 1); --base-layers is refused
    # a field the architecture leaves unset (None) takes the schema's default, as on the command line
    by_arch = {f.name: f.default if getattr(args, f.name, None) is None else getattr(args, f.name)
               for f in dataclasses.fields(AdaptiveLMConfig) if f.name not in owned_elsewhere}
    differ = {name: (model.get(name), value) for name, value in by_arch.items()
              if not name.startswith("_") and not same_value(model.get(name), value)}
    assert not differ, f"configs/{name}.yaml (config, --arch {arch}): {differ}"


@pytest.mark.parametrize("name", sorted(TRANSLATION_CONFIGS))
def test_translation_config_names_its_architecture_and_nothing_else(name):
    arch = load_script("param_table").config_arch(CONFIGS / f"{name}.yaml")
    assert arch == TRANSLATION_CONFIGS[name][0]
    model = compose_config(name).model
    assert model._name == arch and set(model) - {"_name"} == set()


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_config_composes_and_builds_the_papers_model(name):
    arch, vocab, optimizer, updates = PAPER_CONFIGS[name]
    cfg = compose_config(name)
    assert cfg.task._name == "adaptive_language_modeling" and cfg.criterion._name == "adaptive_cross_entropy"
    assert cfg.optimizer._name == optimizer and cfg.optimization.max_update == updates
    d = dictionary_of_size(vocab)
    with torch.device("meta"):
        model = AdaptiveLanguageModel.build_model(cfg.model, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    assert count_parameters(model) == count_parameters(build_lm(arch, vocab=vocab).model)


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
