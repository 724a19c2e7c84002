"""A digest of the parameters a seed initialises (shape, float64 sum and sum of squares of each, in order) for three
tiny architectures: tests/test_golden.py holds today's build to the digest an earlier version wrote
(tests/golden/init_seed0.pt; ``python tests/golden/init_digest.py OUT`` writes one)."""

import sys
from types import SimpleNamespace

import torch

ARCHS = {
    "adaptive_lm_tiny": ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff", "40,120"],
    "adaptive_lm_define_tiny": ["--adaptive-input-cutoff", "40,120", "--adaptive-softmax-cutoff", "40,120"],
    "adaptive_lm_define_std_tiny": [],
}


def digest(arch: str):
    from fairseq import options
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_adaptive.models.counting import dictionary_of_size

    args = options.parse_args_and_arch(options.get_training_parser(),
                                       ["/x", "--task", "language_modeling", "--arch", arch, *ARCHS[arch]])
    d = dictionary_of_size(300)
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    return [(tuple(p.shape), float(p.detach().double().sum()), float(p.detach().double().square().sum()))
            for p in model.parameters()]


if __name__ == "__main__":
    import fairseq_adaptive  # noqa: F401

    torch.save({arch: digest(arch) for arch in ARCHS}, sys.argv[1])
