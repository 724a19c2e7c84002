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
