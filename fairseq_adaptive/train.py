"""``fairseq-adaptive-train``: ``fairseq-train`` whose ``--bf16`` means bfloat16 on the GPU.

fairseq's command line turns ``--bf16`` into ``--tpu`` (options.py), so ``fairseq-train --bf16`` on a GPU fails
looking for an XLA device. This entry point parses exactly as fairseq-train does (same flags, same ``--user-dir``)
and only undoes that implication when ``--tpu`` was not given; fairseq's trainer then casts the model to bf16 and
keeps fp32 master weights (``FP16Optimizer``), or none with ``--memory-efficient-bf16``. The hydra route needs no
wrapper: ``fairseq-hydra-train ... common.bf16=true`` never goes through options.py.
"""

import sys

from fairseq import distributed_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import train


def cli_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    if args.bf16 and "--tpu" not in argv:
        args.tpu = False
    cfg = convert_namespace_to_omegaconf(args)
    distributed_utils.call_main(cfg, train.main)


if __name__ == "__main__":
    cli_main()
