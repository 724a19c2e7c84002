"""Map checkpoints of fairseq's own adaptive models (``transformer_lm`` with ``--adaptive-input`` /
``--adaptive-softmax-cutoff``, e.g. ``transformer_lm_wiki103``) onto ``adaptive_lm``.

Our AdaptiveInput uses fairseq's parameter names and the adaptive softmax is renamed as below; both then move under
the decoder's embedder and scorer (``modules/vocab_layers.upgrade_state_dict``):

| fairseq                                            | ours                          |
|----------------------------------------------------|-------------------------------|
| head.weight (untied: words then cluster logits)     | head_words + head_clusters    |
| head.word_proj.weight / head.word_proj.1.weight     | head_words                    |
| head.word_proj.0.weight                             | head_proj.weight              |
| head.class_proj.weight                              | head_clusters                 |
| tail.{i}.0.weight                                   | tail.{i}.proj                 |
| tail.{i}.2.weight                                   | tail.{i}.words                |
"""

import re
from typing import Dict

from torch import Tensor

from .models.vocab_flags import parse_cutoff
from .modules.vocab_layers import upgrade_state_dict

_TAIL = re.compile(r"^tail\.(\d+)\.([02])\.weight$")
_DROPPED = {"version", "head._float_tensor", "_float_tensor"}


def convert_adaptive_softmax_state(state: Dict[str, Tensor], cutoff0: int, prefix: str = "") -> Dict[str, Tensor]:
    """fairseq ``AdaptiveSoftmax`` entries under ``prefix`` -> ours (other entries are not returned)."""
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in _DROPPED:
            continue
        if name == "head.weight":
            out[prefix + "head_words"], out[prefix + "head_clusters"] = value[:cutoff0], value[cutoff0:]
        elif name in ("head.word_proj.weight", "head.word_proj.1.weight"):
            out[prefix + "head_words"] = value
        elif name == "head.word_proj.0.weight":
            out[prefix + "head_proj.weight"] = value
        elif name == "head.class_proj.weight":
            out[prefix + "head_clusters"] = value
        elif m := _TAIL.match(name):
            out[prefix + f"tail.{m.group(1)}." + ("proj" if m.group(2) == "0" else "words")] = value
        else:
            raise KeyError(f"unexpected fairseq adaptive softmax entry '{key}': is this a fairseq transformer_lm?")
    return out


def convert_fairseq_lm_checkpoint(state: dict) -> dict:
    """A loaded fairseq ``transformer_lm`` checkpoint (``torch.load`` result) -> an ``adaptive_lm`` checkpoint.

    The optimizer state is dropped (its layout follows the parameter order): continue training with
    ``--reset-optimizer``.
    """
    cfg = state.get("cfg")
    model_cfg = cfg["model"] if cfg is not None else vars(state["args"])
    arch = model_cfg.get("_name") or model_cfg.get("arch")
    if arch is None or not str(arch).startswith("transformer_lm"):
        raise ValueError(f"expected a fairseq transformer_lm checkpoint, found model '{arch}'")
    model = state["model"]
    prefix = "decoder.adaptive_softmax."
    converted = {k: v for k, v in model.items() if not k.startswith(prefix) and k not in ("decoder.embed_tokens._float_tensor",)}
    cutoff = model_cfg.get("adaptive_softmax_cutoff")
    if any(k.startswith(prefix) for k in model):
        cutoff0 = parse_cutoff(cutoff, "adaptive_softmax_cutoff", "the checkpoint's own")[0]
        converted.update(convert_adaptive_softmax_state(model, cutoff0=cutoff0, prefix=prefix))
    upgrade_state_dict(converted, "decoder", scorer=True)  # our names: embedder and scorer
    new = dict(state)
    new["model"] = converted
    new["last_optimizer_state"] = None
    if cfg is not None:
        new["cfg"] = dict(cfg)
        new["cfg"]["model"] = dict(model_cfg, _name="adaptive_lm", arch="adaptive_lm")
        criterion = dict(cfg.get("criterion") or {})
        if criterion.get("_name") == "adaptive_loss":
            new["cfg"]["criterion"] = dict(criterion, _name="adaptive_cross_entropy")
    else:
        args = state["args"]
        args.arch = "adaptive_lm"
        if getattr(args, "criterion", None) == "adaptive_loss":
            args.criterion = "adaptive_cross_entropy"
    return new


def convert_hf_transfo_xl_state(state: Dict[str, Tensor], config: dict) -> Dict[str, Tensor]:
    """A HuggingFace ``TransfoXLLMHeadModel`` state dict (transformers 4.35, the last with Transformer-XL; the one
    fairseq's ``transformer_xl`` wraps) and its ``config.to_dict()`` -> the state dict of our ``txl_lm`` at the same
    sizes, for ``load_state_dict`` (strict).

    Ours is built with Transformer-XL's own vocabulary layers (``txl_wiki103_base``'s): ``--decoder-layers n_layer
    --decoder-embed-dim d_model --decoder-attention-heads n_head --decoder-attention-head-dim d_head
    --decoder-ffn-embed-dim d_inner --adaptive-softmax-cutoff <cutoffs>``, ``--mem-len``, ``--clamp-len`` and
    ``--same-length`` as the config's, ``--decoder-normalize-before`` for ``pre_lnorm``, ``--shared-rel-bias`` where
    ``untie_r`` is false. Only what those layers can hold converts: ``div_val`` 1, ``d_embed == d_model`` (no
    projections), at least one cutoff, the softmax tied to the input table, ``attn_type`` 0.

    Vocabulary: ids are kept, HuggingFace's id ``i`` is our dictionary's index ``i``, as fairseq's ``transformer_xl``
    feeds fairseq's token ids to the HuggingFace model unchanged (benchmarks/txl.py compares the two so): a table of
    ``V`` rows needs a dictionary of ``V`` entries, whose first four are fairseq's special symbols.

    | HuggingFace                                           | ours (under ``decoder.``)                     |
    |-------------------------------------------------------|-----------------------------------------------|
    | transformer.word_emb.emb_layers.0.weight              | embed_tokens.embedding.weight (and the        |
    |   (crit.out_layers.0.weight is the same, tied)        |   softmax's tied scorer.softmax.table)        |
    | transformer.layers.{i}.dec_attn.qkv_net / r_net /     | body.layers.{i}.attention.qkv / pos / out     |
    |   o_net (.weight)                                     |                                               |
    | transformer.layers.{i}.dec_attn.layer_norm            | body.layers.{i}.attention.norm                |
    | transformer.layers.{i}.pos_ff.CoreNet.0 / .3          | body.layers.{i}.ffn.fc1 / fc2                 |
    | transformer.layers.{i}.pos_ff.layer_norm              | body.layers.{i}.ffn.norm                      |
    | transformer.layers.{i}.dec_attn.r_w_bias / r_r_bias   | body.u[i] / body.v[i]                         |
    |   (shared: transformer.r_w_bias / r_r_bias)           |   (body.u[0] / body.v[0])                     |
    | crit.cluster_weight / crit.cluster_bias               | scorer.softmax.head_clusters / cluster_bias   |
    |   (head column cutoffs[0] + i - 1 is tail cluster i,  |   (tail clusters in the same order)           |
    |   as the model's forward reads it)                    |                                               |
    | crit.out_layers.0.bias                                | scorer.softmax.word_bias                      |
    | transformer.pos_emb.inv_freq                          | (not stored: ours computes the same sinusoid) |
    """
    import torch  # (this module's other converters need only tensors' methods)

    layers = int(config["n_layer"])
    d_model = int(config["d_model"])
    problems = []
    if int(config.get("div_val", 1)) != 1:
        problems.append(f"div_val {config['div_val']} (ours: 1, every cluster at full width)")
    if int(config.get("d_embed") or d_model) != d_model:
        problems.append(f"d_embed {config['d_embed']} != d_model {d_model} (ours: no projections)")
    if not config.get("cutoffs"):
        problems.append("no cutoffs (ours: Transformer-XL's clustered softmax)")
    if not config.get("tie_word_embeddings", True):
        problems.append("an untied softmax (ours: tied to the input table)")
    if int(config.get("attn_type", 0)) != 0:
        problems.append(f"attn_type {config['attn_type']} (ours: 0, relative positions)")
    if problems:
        raise ValueError("this Transformer-XL does not convert to txl_lm: " + "; ".join(problems))

    table = state["transformer.word_emb.emb_layers.0.weight"]
    tied = state.get("crit.out_layers.0.weight")
    if tied is not None and not (tied.shape == table.shape and bool((tied == table).all())):
        raise ValueError("crit.out_layers.0.weight differs from the input table: an untied softmax does not convert")
    out: Dict[str, Tensor] = {"decoder.embed_tokens.embedding.weight": table, "decoder.scorer.softmax.table": table}
    names = {"dec_attn.qkv_net.weight": "attention.qkv.weight", "dec_attn.r_net.weight": "attention.pos.weight",
             "dec_attn.o_net.weight": "attention.out.weight", "dec_attn.layer_norm.weight": "attention.norm.weight",
             "dec_attn.layer_norm.bias": "attention.norm.bias", "pos_ff.CoreNet.0.weight": "ffn.fc1.weight",
             "pos_ff.CoreNet.0.bias": "ffn.fc1.bias", "pos_ff.CoreNet.3.weight": "ffn.fc2.weight",
             "pos_ff.CoreNet.3.bias": "ffn.fc2.bias", "pos_ff.layer_norm.weight": "ffn.norm.weight",
             "pos_ff.layer_norm.bias": "ffn.norm.bias"}
    used = {"transformer.word_emb.emb_layers.0.weight", "crit.out_layers.0.weight", "transformer.pos_emb.inv_freq"}
    for i in range(layers):
        for theirs, ours in names.items():
            key = f"transformer.layers.{i}.{theirs}"
            out[f"decoder.body.layers.{i}.{ours}"] = state[key]
            used.add(key)
    for theirs, ours in (("r_w_bias", "u"), ("r_r_bias", "v")):
        keys = ([f"transformer.layers.{i}.dec_attn.{theirs}" for i in range(layers)] if config.get("untie_r", True)
                else [f"transformer.{theirs}"])  # one pair per layer, or one shared pair
        out[f"decoder.body.{ours}"] = torch.stack([state[k] for k in keys])
        used.update(keys)
    for theirs, ours in (("cluster_weight", "head_clusters"), ("cluster_bias", "cluster_bias"),
                         ("out_layers.0.bias", "word_bias")):
        out[f"decoder.scorer.softmax.{ours}"] = state[f"crit.{theirs}"]
        used.add(f"crit.{theirs}")
    left = sorted(set(state) - used)
    if left:
        raise KeyError(f"HuggingFace Transformer-XL entries with no place in txl_lm: {', '.join(left)}")
    return out
