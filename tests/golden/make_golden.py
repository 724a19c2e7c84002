"""Write the golden checkpoints under tests/golden/: tiny models trained for a few updates by fairseq-train, each
with the dictionaries it was trained with and the log-probabilities it gives on a fixed input (``expected.pt``).

They pin what a checkpoint means: tests/test_golden.py loads each one strictly (through fairseq's own loader, which
upgrades old layouts) and must score the same. Regenerate them only to add a case, never to make a test pass: a
checkpoint written by an earlier version must keep loading.

Usage: python tests/golden/make_golden.py [CASE ...]   (every case of golden.CASES when none is named; write a new
case alone, naming it, so that the cases already written are left as they are)
"""

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fairseq_cli import preprocess, train  # noqa: E402

from tests.helpers import USER_DIR, load_script, run_cli  # noqa: E402
from tests.golden.golden import CASES, HERE, score  # noqa: E402

COMMON = ["--user-dir", USER_DIR, "--cpu", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "512",
          "--no-progress-bar", "--seed", "1", "--num-workers", "0", "--max-update", "3", "--no-epoch-checkpoints",
          "--save-interval-updates", "0", "--disable-validation"]


def lm_corpus(root: Path) -> Path:
    (root / "raw").mkdir(parents=True)
    with gzip.open(ROOT / "data" / "lm-sample" / "train.txt.gz", "rt") as f:
        (root / "raw" / "train.txt").write_text(f.read(20_000))
    run_cli(preprocess.cli_main, ["--only-source", "--trainpref", root / "raw" / "train.txt", "--destdir",
                                  root / "bin", "--workers", "1", "--nwordssrc", "196"])
    return root / "bin"


def mt_corpus(root: Path) -> Path:
    (root / "raw").mkdir(parents=True)
    for split, n in (("train", 400), ("valid", 8), ("test", 8)):
        with gzip.open(ROOT / "data" / "mt-sample" / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
            (root / "raw" / f"{split}.tsv").write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    load_script("prepare_mt").main([str(root / "raw"), str(root / "bin"), "--vocab-size", "200", "--workers", "1"])
    return root / "bin"


def main(names=None) -> None:
    names = list(names or CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown golden case(s) {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpora = {"lm": lm_corpus, "mt": mt_corpus}
        data = {kind: corpora[kind](tmp / kind) for kind in sorted({CASES[n]["data"] for n in names})}
        for name in names:
            case = CASES[name]
            out = HERE / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            src = data[case["data"]]
            flags = [f.replace("{cutoff}", (src / "cutoffs.txt").read_text().strip()) if "{" in f else f
                     for f in case["flags"]]
            run_cli(train.cli_main, [src, *COMMON, *flags, "--save-dir", tmp / name])
            state = torch.load(tmp / name / "checkpoint_last.pt", weights_only=False)
            # the order of the optimizer's per-parameter state is the order of model.parameters(): keep the shapes
            # (a resume feeds them back by position), drop the state itself (size)
            opt = state["last_optimizer_state"]["state"]
            state["order"] = [list(opt[i]["exp_avg"].shape) for i in sorted(opt)]
            state["last_optimizer_state"] = None
            torch.save(state, out / "checkpoint.pt")
            for d in src.glob("dict*.txt"):
                shutil.copy(d, out / d.name)
            torch.save(score(out, case), out / "expected.pt")
            print(name, (out / "checkpoint.pt").stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
