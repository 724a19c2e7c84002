"""scripts/plot_curves.py on real training logs."""

import json
import re
import subprocess
import sys

import pytest

from .helpers import ROOT, USER_DIR, load_script

pytestmark = pytest.mark.cli


def run_subprocess(argv):
    done = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *map(str, argv)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_plot_curves_reads_json_logs_and_draws(lm_data, tmp_path, capsys):
    logs = []
    for name, dim in (("small", "16"), ("wider", "32")):
        log = tmp_path / f"{name}.log"
        # separate processes: fairseq adds a log-file handler per run and never removes it
        run_subprocess([lm_data, "--user-dir", USER_DIR, "--cpu", "--task", "adaptive_language_modeling",
                                 "--arch", "adaptive_lm_tiny", "--decoder-embed-dim", dim,
                                 "--criterion", "adaptive_cross_entropy", "--optimizer", "adam", "--lr", "0.003",
                                 "--max-tokens", "1024", "--tokens-per-sample", "64", "--max-update", "6",
                                 "--validate-interval-updates", "3", "--save-dir", tmp_path / name,
                                 "--log-format", "json", "--log-interval", "1", "--log-file", log,
                                 "--num-workers", "0", "--no-progress-bar"])
        logs.append(log)
    (tmp_path / "eval.log").write_text("INFO:fairseq_cli.eval_lm:Loss (base 2): 9.1, Perplexity: 548.76\n")
    plot_curves = load_script("plot_curves")
    capsys.readouterr()
    plot_curves.main([str(p) for p in logs] + ["--labels", "small", "wider", "--out", str(tmp_path / "c.png"),
                                                "--test-logs", str(tmp_path / "eval.log"), str(tmp_path / "eval.log")])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| small") or line.startswith("| wider")]
    assert len(rows) == 2 and all("548.76" in r and "| 6 |" in r for r in rows)
    assert all(float(r.split("|")[6].replace(",", "")) > 0 for r in rows)  # words/s from the interval records
    small, wider = (r.split("|")[2].strip() for r in rows)
    assert float(small.rstrip("M")) < float(wider.rstrip("M"))  # parameter counts read from the logs
    png = (tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_benchmarks_run_at_tiny_sizes(tmp_path):
    """The benchmark scripts stay runnable (their timings are printed, never asserted)."""
    for script, extra in (
        ("output_layer.py", ["--vocab", "600", "--dim", "16", "--cutoff", "100,300", "--tokens", "64"]),
        ("train_step.py", ["--vocab", "600", "--dim", "16", "--ffn", "32", "--heads", "2", "--layers", "1",
                           "--cutoff", "100,300", "--tokens-per-sample", "16", "--max-tokens", "64"]),
        ("define_block.py", ["--vocab", "300", "--n", "16", "--k", "64", "--m", "32", "--groups", "4",
                             "--tokens", "64"]),
        ("lstm.py", ["--vocab", "600", "--dim", "16", "--layers", "1", "--tokens-per-sample", "8", "--batch", "2"]),
    ):
        done = subprocess.run([sys.executable, ROOT / "benchmarks" / script, *extra, "--repeat", "2", "--warmup", "1",
                               "--json", tmp_path / f"{script}.json"], capture_output=True, text=True,
                              cwd=ROOT / "benchmarks")
        assert done.returncode == 0, done.stderr[-3000:]
        table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
        assert len(table) >= 3 and "nan" not in done.stdout and (tmp_path / f"{script}.json").exists()
        if script == "output_layer.py":  # the CPU peak-memory probe ran in a fresh process for every row
            rows = json.loads((tmp_path / f"{script}.json").read_text())["rows"]
            assert all(isinstance(r["extra_peak_mib"], float) and r["extra_peak_mib"] >= 0 for r in rows)


def test_txl_benchmark_runs_at_tiny_sizes(tmp_path):
    """benchmarks/txl.py needs the benchmark extra (transformers 4.35.2), not installed by the test command."""
    pytest.importorskip("transformers.models.transfo_xl")
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "txl.py", "--vocab", "600", "--cutoff", "100,300",
                           "--dim", "16", "--heads", "2", "--head-dim", "8", "--ffn", "32", "--layers", "1",
                           "--tgt-len", "8", "--mem-len", "8", "--batch", "2", "--repeat", "2", "--warmup", "1",
                           "--json", tmp_path / "txl.json"], capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr[-3000:]
    gaps = [float(x) for x in re.findall(r"over the 4 segments (\d\.\de[-+]\d\d)", done.stdout)]
    assert gaps and gaps[0] < 1e-4  # equal weights, equal scores
