import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "lm-sample"
MT_SAMPLE = ROOT / "data" / "mt-sample"
USER_DIR = str(ROOT / "fairseq_adaptive")

import fairseq_adaptive  # noqa: E402,F401  (registers our components before fairseq parses flags)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run on a CUDA GPU where the Triton kernels run (compute capability 8.0+), else skip."""
    import torch

    from fairseq_adaptive.modules import triton_support

    if torch.cuda.is_available() and triton_support.runs_on(torch.empty(0, device="cuda")):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU of compute capability 8.0+ with Triton")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def run_cli(main, argv):
    """Run a fairseq console entry point in-process with ``argv`` (as fairseq's own tests do)."""
    old = sys.argv
    sys.argv = [main.__module__] + [str(a) for a in argv]
    try:
        return main()
    finally:
        sys.argv = old


def write_text_sample(dest: Path, chars: dict) -> None:
    for split, n in chars.items():
        with gzip.open(SAMPLE / f"{split}.txt.gz", "rt") as f:
            (dest / f"{split}.txt").write_text(f.read(n))


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory):
    """A small binarised LM corpus cut from the bundled sample (real text)."""
    from fairseq_cli import preprocess

    root = tmp_path_factory.mktemp("lm")
    write_text_sample(root, {"train": 120_000, "valid": 20_000, "test": 20_000})
    run_cli(
        preprocess.cli_main,
        ["--only-source", "--trainpref", root / "train.txt", "--validpref", root / "valid.txt",
         "--testpref", root / "test.txt", "--destdir", root / "bin", "--workers", "1"],
    )
    return root / "bin"


def load_script(name):
    """A module from scripts/ (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mt_data(tmp_path_factory):
    """A joined-dictionary corpus cut from the bundled English-German sample, prepared by scripts/prepare_mt.py."""
    root = tmp_path_factory.mktemp("mt")
    raw = root / "raw"
    raw.mkdir()
    for split, n in (("train", 4000), ("valid", 64), ("test", 61)):
        with gzip.open(MT_SAMPLE / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        (raw / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    load_script("prepare_mt").main([str(raw), str(root / "bin"), "--vocab-size", "1000", "--workers", "1"])
    return root / "bin"



@pytest.fixture(autouse=True)
def _single_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


def run_interpreted(code: str) -> None:
    """Run ``code`` in a fresh interpreter with Triton's CPU interpreter on; it must print ``kernel ok``."""
    pytest.importorskip("triton")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # tests.interpreted importable
    env = dict(os.environ, TRITON_INTERPRET="1", FAIRSEQ_ADAPTIVE_NO_TRITON="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "kernel ok" in proc.stdout, proc.stderr[-3000:]


def compile_for_h100(kernel, signature: dict, constexprs: dict, num_warps: int) -> None:
    """Triton's whole compiler, to an sm_90 cubin through ptxas, runs without a GPU: ``kernel`` must get through."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(kernel, {**signature, **{name: "constexpr" for name in constexprs}}, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert len(compiled.asm["cubin"]) > 1000 and ".target sm_90" in compiled.asm["ptx"]


def steps_with_and_without_autocast(model, criterion, sample):
    """One training step in fp32, then one under CPU bf16 autocast (the code fairseq's ``--amp`` runs on CUDA):
    ``[(loss, gradients), (loss, gradients)]``."""
    import torch

    steps = []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model, sample)[0]
        loss.backward()
        steps.append((loss.detach(), [p.grad for p in model.parameters()]))
    return steps
