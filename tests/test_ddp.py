"""Two CPU processes under PyTorch DDP (gloo, the default `find_unused_parameters=False`) train our model with
our criterion on a batch split in which one rank's targets leave both tail clusters empty; the averaged
gradients must equal a single process on the joined batch. fairseq's own launcher passes CUDA device ids to
DDP even with --cpu, so the model and criterion are driven under torch DDP directly here."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fairseq import options

from fairseq_adaptive.criterions.adaptive_cross_entropy import AdaptiveCrossEntropyCriterion
from fairseq_adaptive.models.adaptive_lm import AdaptiveLanguageModel
from fairseq_adaptive.models.counting import dictionary_of_size

V, CUT = 120, "24,64"


def build():
    torch.manual_seed(0)
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        ["/x", "--task", "language_modeling", "--arch", "adaptive_lm_tiny",
         "--adaptive-input-cutoff", CUT, "--adaptive-softmax-cutoff", CUT],
    )
    args.tie_adaptive_proj = False  # own tail projections: more parameters that an empty cluster could starve
    d = dictionary_of_size(V)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    model = AdaptiveLanguageModel.build_model(args, task)
    return model, AdaptiveCrossEntropyCriterion(task, sentence_avg=False)


def batches():
    g = torch.Generator().manual_seed(3)
    head_only = torch.randint(4, 24, (2, 10), generator=g)  # every target in the head: tails empty
    mixed = torch.randint(4, V, (2, 10), generator=g)
    mixed[0, :2] = torch.tensor([30, 100])  # at least one target in each tail cluster
    mixed[1, -3:] = 1  # padding
    return [head_only, mixed]


def sample(tokens):
    target = torch.cat([tokens[:, 1:], torch.full((tokens.size(0), 1), 2)], dim=1)
    target[tokens == 1] = 1
    return {
        "net_input": {"src_tokens": tokens, "src_lengths": tokens.ne(1).sum(1)},
        "target": target,
        "ntokens": int(target.ne(1).sum()),
    }


def step_grads(model, criterion, s):
    model.zero_grad()
    loss, _, _ = criterion(model, s)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class ProxyDDP(torch.nn.parallel.DistributedDataParallel):
    """Attribute access falls through to the model, as fairseq's DistributedFairseqModel wrapper does."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model, criterion = build()
    ddp = ProxyDDP(model)
    s = sample(batches()[rank])
    grads = []
    for _ in range(2):  # a second step fails under DDP if a parameter went unused in the first
        model.zero_grad()
        loss, _, _ = criterion(ddp, s)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    if rank == 0:
        torch.save(grads, out)
    dist.destroy_process_group()


@pytest.mark.cli  # mp.spawn: two worker processes
def test_ddp_gradients_equal_single_process_on_joined_batch(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2, join=True)
    ddp_grads = torch.load(out)
    model, criterion = build()
    n_params = len(list(model.named_parameters()))
    joined = torch.nn.utils.rnn.pad_sequence([t for b in batches() for t in b], batch_first=True, padding_value=1)
    reference = step_grads(model, criterion, sample(joined))
    assert len(reference) == n_params
    for grads in ddp_grads:
        assert set(grads) == set(reference), "a parameter got no gradient under DDP"
        for name, g in grads.items():
            # DDP averages over 2 ranks; the summed loss of the joined batch adds the two halves
            torch.testing.assert_close(2 * g, reference[name], atol=1e-5, rtol=1e-4, msg=name)
