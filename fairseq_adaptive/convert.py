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
from typing import Dict, Optional

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
    fairseq's ``transformer_xl`` wraps; the released ``transfo-xl-wt103``) and its config (``config.json``) -> the state
    dict of our ``txl_lm`` at the same sizes, for ``load_state_dict`` (strict). :func:`transfo_xl_flags` gives the
    flags that build it.

    - ``div_val`` 1 (``d_embed == d_model``): Transformer-XL's own layers as ``txl_wiki103_base`` has them, a plain
      table and a clustered softmax tied to it at full width, a bias per word;
    - ``div_val`` > 1 (the large model): an adaptive input whose band ``i`` is ``d_embed / div_val^i`` wide and
      projected to ``d_model`` (``emb_layers``, ``emb_projs``), the adaptive softmax tied to it (word rows, and the
      tails' projections: ``tie_projs = [False, True, ...]``), the head's own projection (``out_projs[0]``:
      ``--adaptive-softmax-head-proj``), a bias per word, as ``txl_wiki103_large`` has them.

    Vocabulary: ids are kept, HuggingFace's id ``i`` is our dictionary's index ``i`` (fairseq's ``transformer_xl``
    feeds fairseq's ids to the HuggingFace model unchanged; ``scripts/convert_transfo_xl.py`` permutes the rows for
    a dictionary in fairseq's layout).

    | HuggingFace                                           | ours (under ``decoder.``)                     |
    |-------------------------------------------------------|-----------------------------------------------|
    | transformer.word_emb.emb_layers.0.weight (div_val 1;  | embed_tokens.embedding.weight (and the        |
    |   crit.out_layers.0.weight is the same, tied)         |   softmax's tied scorer.softmax.table)        |
    | transformer.word_emb.emb_layers.{i}.weight,           | embed_tokens.embedding.embeddings.{i}.0 / .1  |
    |   emb_projs.{i} (div_val > 1)                         |   (and the softmax's tied word rows and tails)|
    | crit.out_projs.0 (div_val > 1, transposed)            | scorer.softmax.head_proj.weight               |
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
    | crit.out_layers.{i}.bias                              | scorer.softmax.word_bias (concatenated)       |
    | transformer.pos_emb.inv_freq                          | (not stored: ours computes the same sinusoid) |
    """
    import torch  # (this module's other converters need only tensors' methods)

    layers = int(config["n_layer"])
    div_val = int(config.get("div_val", 1))
    clusters = len(config.get("cutoffs") or [])
    tie_projs = list(config.get("tie_projs") or [False] + [True] * clusters)
    problems = []
    if div_val == 1 and int(config.get("d_embed") or config["d_model"]) != int(config["d_model"]):
        problems.append(f"div_val 1 with d_embed {config['d_embed']} != d_model {config['d_model']} (ours: no "
                        f"projections at div_val 1)")
    if not clusters:
        problems.append("no cutoffs (ours: Transformer-XL's clustered softmax)")
    if not config.get("tie_word_embeddings", config.get("tie_weight", True)):
        problems.append("an untied softmax (ours: tied to the input layer)")
    if div_val > 1 and (tie_projs[:1] != [False] or not all(tie_projs[1:])):
        problems.append(f"tie_projs {tie_projs} (ours: [False] + [True] * clusters, as the original train.py sets)")
    if int(config.get("attn_type", 0)) != 0:
        problems.append(f"attn_type {config['attn_type']} (ours: 0, relative positions)")
    if problems:
        raise ValueError("this Transformer-XL does not convert to txl_lm: " + "; ".join(problems))

    used = {"transformer.pos_emb.inv_freq"}

    def take(key: str, twin: Optional[str] = None) -> Tensor:
        """``state[key]``, or its tied ``twin`` where the file holds tied tensors once (safetensors)."""
        used.add(key)
        if key not in state and twin is not None and twin in state:
            used.add(twin)
            return state[twin]
        return state[key]

    def same(key: str, value: Tensor, what: str) -> None:
        tied = state.get(key)
        used.add(key)
        if tied is not None and not (tied.shape == value.shape and bool((tied == value).all())):
            raise ValueError(f"{key} differs from {what}: an untied softmax does not convert")

    out: Dict[str, Tensor] = {}
    if div_val == 1:
        table = take("transformer.word_emb.emb_layers.0.weight", "crit.out_layers.0.weight")
        same("crit.out_layers.0.weight", table, "the input table")
        out.update({"decoder.embed_tokens.embedding.weight": table, "decoder.scorer.softmax.table": table})
    else:
        prefix, softmax = "decoder.embed_tokens.embedding.embeddings", "decoder.scorer.softmax"
        for band in range(clusters + 1):
            rows = take(f"transformer.word_emb.emb_layers.{band}.weight", f"crit.out_layers.{band}.weight")
            proj = take(f"transformer.word_emb.emb_projs.{band}", f"crit.out_projs.{band}" if band else None)
            out[f"{prefix}.{band}.0.weight"], out[f"{prefix}.{band}.1.weight"] = rows, proj
            same(f"crit.out_layers.{band}.weight", rows, f"emb_layers.{band}")
            if band == 0:
                out[f"{softmax}.head_words"] = rows
                out[f"{softmax}.head_proj.weight"] = take("crit.out_projs.0").t().contiguous()
            else:
                same(f"crit.out_projs.{band}", proj, f"emb_projs.{band}")
                out[f"{softmax}.tail.{band - 1}.words"], out[f"{softmax}.tail.{band - 1}.proj"] = rows, proj
    names = {"dec_attn.qkv_net.weight": "attention.qkv.weight", "dec_attn.r_net.weight": "attention.pos.weight",
             "dec_attn.o_net.weight": "attention.out.weight", "dec_attn.layer_norm.weight": "attention.norm.weight",
             "dec_attn.layer_norm.bias": "attention.norm.bias", "pos_ff.CoreNet.0.weight": "ffn.fc1.weight",
             "pos_ff.CoreNet.0.bias": "ffn.fc1.bias", "pos_ff.CoreNet.3.weight": "ffn.fc2.weight",
             "pos_ff.CoreNet.3.bias": "ffn.fc2.bias", "pos_ff.layer_norm.weight": "ffn.norm.weight",
             "pos_ff.layer_norm.bias": "ffn.norm.bias"}
    for i in range(layers):
        for theirs, ours in names.items():
            out[f"decoder.body.layers.{i}.{ours}"] = take(f"transformer.layers.{i}.{theirs}")
    for theirs, ours in (("r_w_bias", "u"), ("r_r_bias", "v")):
        keys = ([f"transformer.layers.{i}.dec_attn.{theirs}" for i in range(layers)] if config.get("untie_r", True)
                else [f"transformer.{theirs}"])  # one pair per layer, or one shared pair
        out[f"decoder.body.{ours}"] = torch.stack([take(k) for k in keys])
    out["decoder.scorer.softmax.head_clusters"] = take("crit.cluster_weight")
    out["decoder.scorer.softmax.cluster_bias"] = take("crit.cluster_bias")
    biases = [take(f"crit.out_layers.{band}.bias") for band in range(clusters + 1 if div_val > 1 else 1)]
    out["decoder.scorer.softmax.word_bias"] = torch.cat(biases)
    left = sorted(set(state) - used)
    if left:
        raise KeyError(f"HuggingFace Transformer-XL entries with no place in txl_lm: {', '.join(left)}")
    return out


def transfo_xl_flags(config: dict) -> list:
    """The ``txl_lm`` flags that build the model a HuggingFace Transformer-XL config describes (on top of
    ``--arch txl_wiki103_base`` for ``div_val`` 1, ``txl_wiki103_large`` otherwise), as strings."""
    cutoff = ",".join(str(int(c)) for c in config["cutoffs"])
    flags = ["--decoder-layers", config["n_layer"], "--decoder-embed-dim", config["d_model"],
             "--decoder-attention-heads", config["n_head"], "--decoder-attention-head-dim", config["d_head"],
             "--decoder-ffn-embed-dim", config["d_inner"], "--dropout", config.get("dropout", 0.1),
             "--attention-dropout", config.get("dropatt", 0.0), "--mem-len", config.get("mem_len", 0),
             "--clamp-len", config.get("clamp_len", -1), "--adaptive-softmax-cutoff", cutoff]
    if int(config.get("div_val", 1)) > 1:
        flags += ["--adaptive-input-cutoff", cutoff, "--adaptive-input-factor", config["div_val"],
                  "--adaptive-softmax-factor", config["div_val"], "--decoder-input-dim",
                  config.get("d_embed") or config["d_model"]]
    if config.get("same_length"):
        flags.append("--same-length")
    if config.get("pre_lnorm"):
        flags.append("--decoder-normalize-before")
    if not config.get("untie_r", True):
        flags.append("--shared-rel-bias")
    return [str(f) for f in flags]


def fastai_rows(vocab: int) -> Tensor:
    """For each fairseq id, the fastai id whose row it takes: fastai's vocabulary starts ``xxunk, xxpad, xxbos,
    xxeos``, fairseq's ``<s>, <pad>, </s>, <unk>``; ``<unk>`` takes ``xxunk``'s row, ``</s>`` (a line's end, the input
    before its first word) ``xxbos``'s, ``<s>`` (unused by a language model) ``xxeos``'s; the rest keeps its ids."""
    import torch

    rows = torch.arange(vocab)
    rows[0], rows[3] = 3, 0
    return rows


def convert_fastai_awd_lstm_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """fastai's ``SequentialRNN(AWD_LSTM, LinearDecoder)`` state dict (its pretrained WikiText-103 model; tied, with
    an output bias) -> ``adaptive_lstm_lm``'s (``--arch lstm_awd_ptb`` at its sizes), rows in fairseq's order
    (:func:`fastai_rows`). Both stacks are torch's LSTMs: the gates and both biases map as they are; the hidden-to-
    hidden weight is fastai's ``weight_hh_l0_raw`` (``module.weight_hh_l0`` is the last weight-dropped copy).

    | fastai                                            | ours (under ``decoder.``)                             |
    |---------------------------------------------------|-------------------------------------------------------|
    | 0.encoder.weight (= 1.decoder.weight, tied)       | embed_tokens.embedding.weight (= scorer.softmax.weight) |
    | 1.decoder.bias                                    | scorer.softmax.bias                                   |
    | 0.rnns.{l}.module.weight_ih_l0 / bias_ih_l0 /     | body.layers.{l}.weight_ih_l0 / bias_ih_l0 / bias_hh_l0 |
    |   bias_hh_l0                                      |                                                       |
    | 0.rnns.{l}.weight_hh_l0_raw                       | body.layers.{l}.weight_hh_l0                          |
    """
    table = state.get("0.encoder.weight")
    if table is None:
        raise KeyError("0.encoder.weight: not a fastai AWD-LSTM language model's state dict")
    decoder = state.get("1.decoder.weight")
    if decoder is not None and not (decoder.shape == table.shape and bool((decoder == table).all())):
        raise ValueError("1.decoder.weight differs from the encoder's table: an untied decoder does not convert")
    rows = fastai_rows(table.size(0))
    out = {"decoder.embed_tokens.embedding.weight": table[rows], "decoder.scorer.softmax.weight": table[rows],
           "decoder.scorer.softmax.bias": state["1.decoder.bias"][rows]}
    layer = 0
    while f"0.rnns.{layer}.weight_hh_l0_raw" in state:
        for theirs, ours in (("weight_hh_l0_raw", "weight_hh_l0"), ("module.weight_ih_l0", "weight_ih_l0"),
                             ("module.bias_ih_l0", "bias_ih_l0"), ("module.bias_hh_l0", "bias_hh_l0")):
            out[f"decoder.body.layers.{layer}.{ours}"] = state[f"0.rnns.{layer}.{theirs}"]
        layer += 1
    if layer == 0:
        raise KeyError("0.rnns.0.weight_hh_l0_raw: not a fastai AWD-LSTM (its weight-dropped LSTMs are missing)")
    return out


def fastai_awd_lstm_flags(state: Dict[str, Tensor]) -> list:
    """The ``--arch lstm_awd_ptb`` flags at a fastai AWD-LSTM state dict's sizes."""
    layers = sum(1 for k in state if k.endswith(".weight_hh_l0_raw"))
    return ["--decoder-embed-dim", str(state["0.encoder.weight"].size(1)), "--decoder-hidden-dim",
            str(state["0.rnns.0.weight_hh_l0_raw"].size(1)), "--decoder-layers", str(layers)]
