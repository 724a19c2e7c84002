"""Fixtures and pytest hooks. What test files share as plain functions and constants lives in tests/helpers.py."""

import gzip
import os

import pytest

import fairseq_adaptive  # noqa: F401  (registers our components before fairseq parses flags)

from .helpers import MT_SAMPLE, load_script, run_cli, write_text_sample


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
