"""Faults around a run, each stopped with our message before anything is written: fairseq-train with our model or
task never writes over checkpoints it did not start from (a --restore-file that does not exist, a fresh start beside
another run's checkpoints; the save directory is left byte for byte as it was); sizes of zero or below; fairseq's
own commands given an unreadable checkpoint; a DeFINE group setting the rule maps to another."""

import shutil

import pytest
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq_cli import eval_lm, generate, interactive, train

from fairseq_adaptive import fairseq_fixes
from fairseq_adaptive.modules.define import define_layout

from .helpers import LM_TRAIN, TINY_LM, USER_DIR, build_lm, load_script, run_cli


def train_run(data, save_dir, *extra, updates=3):
    # fairseq keeps the best validation loss of the process on a function attribute: forget earlier runs' (a best
    # checkpoint is then written whenever this run validates)
    vars(checkpoint_utils.save_checkpoint).pop("best", None)
    run_cli(train.cli_main, [data, *LM_TRAIN, *TINY_LM, "--max-update", updates, "--save-dir", save_dir,
                             "--no-epoch-checkpoints", "--save-interval-updates", "0", *extra])


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def earlier_run(lm_data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("earlier")
    train_run(lm_data, save_dir)
    assert {"checkpoint_last.pt", "checkpoint_best.pt"} <= set(contents(save_dir))
    return save_dir


@pytest.mark.cli
def test_a_missing_restore_file_stops_and_leaves_the_save_dir_as_it_was(lm_data, earlier_run, tmp_path):
    before = contents(earlier_run)
    missing = tmp_path / "no_such_checkpoint.pt"
    with pytest.raises(ValueError, match=f"--restore-file {missing} does not exist.*nothing was loaded or written"):
        train_run(lm_data, earlier_run, "--restore-file", missing)
    assert contents(earlier_run) == before


@pytest.mark.cli
def test_a_fresh_start_beside_another_runs_checkpoints_stops(lm_data, earlier_run, tmp_path):
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    shutil.copy(earlier_run / "checkpoint_best.pt", save_dir)  # no checkpoint_last.pt to resume from
    before = contents(save_dir)
    with pytest.raises(ValueError, match="holds checkpoints of another run \\(checkpoint_best.pt\\) and this run "
                                         "starts from scratch.*--restore-file"):
        train_run(lm_data, save_dir)
    assert contents(save_dir) == before


@pytest.mark.cli
def test_a_start_from_elsewhere_does_not_overwrite_a_run(lm_data, earlier_run, tmp_path):
    save_dir = tmp_path / "save"
    shutil.copytree(earlier_run, save_dir)
    before = contents(save_dir)
    with pytest.raises(ValueError, match=f"starts from {earlier_run / 'checkpoint_best.pt'}"):
        train_run(lm_data, save_dir, "--restore-file", earlier_run / "checkpoint_best.pt")
    assert contents(save_dir) == before


@pytest.mark.cli
def test_going_back_to_a_checkpoint_of_the_same_run_is_allowed(lm_data, earlier_run, tmp_path, caplog):
    save_dir = tmp_path / "save"
    shutil.copytree(earlier_run, save_dir)
    train_run(lm_data, save_dir, "--restore-file", save_dir / "checkpoint_best.pt", updates=4)
    assert "a checkpoint of --save-dir" in caplog.text
    assert contents(save_dir)["checkpoint_last.pt"] != contents(earlier_run)["checkpoint_last.pt"]


@pytest.mark.cli
@pytest.mark.parametrize("flags, message", [
    (["--tokens-per-sample", "0"], "--tokens-per-sample=0 must be at least 1"),
    (["--max-target-positions", "-1"], "--max-target-positions=-1 must be at least 1"),
    (["--max-tokens", "0"], "--max-tokens=0 must be at least 1"),
    (["--batch-size", "0"], "--batch-size=0 must be at least 1"),
])
def test_sizes_of_zero_or_below_are_named(lm_data, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        train_run(lm_data, tmp_path / "save", *flags)
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


def test_the_batching_fix_names_sizes_of_zero():
    fairseq_fixes.apply()
    with pytest.raises(ValueError, match="--max-tokens=0 must be at least 1"):
        data_utils.batch_by_size([0, 1], lambda i: 4, max_tokens=0)


@pytest.mark.cli
@pytest.mark.parametrize("content", [b"", b"\x80\x02not a checkpoint" * 40], ids=["empty", "damaged"])
@pytest.mark.parametrize("command", ["eval_lm", "generate", "interactive"])
def test_fairseqs_commands_name_an_unreadable_checkpoint(lm_data, tmp_path, content, command):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    main = {"eval_lm": eval_lm.cli_main, "generate": generate.cli_main, "interactive": interactive.cli_main}[command]
    extra = ["--task", "language_modeling"] if command != "eval_lm" else []
    with pytest.raises(ValueError, match=f"{path} (is empty|is not a checkpoint torch can read)"):
        run_cli(main, [lm_data, "--user-dir", USER_DIR, "--path", path, "--cpu", *extra])


CUTOFF = ["--adaptive-input-cutoff", "50,100", "--adaptive-softmax-cutoff", "50,100"]


def test_a_group_limit_the_rule_does_not_reach_is_named(caplog):
    with caplog.at_level("INFO"):
        build_lm("adaptive_lm_define_tiny", ["--define-max-groups", "16", *CUTOFF], vocab=200)
    assert "--define-max-groups=16 with --define-layers=3: the group rule reaches 4 (groups 4, 2, 1)" in caplog.text


def test_a_group_setting_the_rule_maps_to_another_is_refused():
    with pytest.raises(ValueError, match="--define-max-groups=3: .* builds the same unit as 2 \\(groups 1, 2, 1\\)"):
        define_layout(64, 256, 128, 3, 3)
    assert [spec.groups for spec in define_layout(64, 256, 128, 3, 4)] == [4, 2, 1]
    assert [spec.groups for spec in define_layout(96, 384, 192, 3, 3, transform="glt")] == [3, 3, 3]


@pytest.mark.cli
def test_a_resume_whose_flags_give_other_shapes_names_the_settings(lm_data, earlier_run, tmp_path):
    save_dir = tmp_path / "save"
    shutil.copytree(earlier_run, save_dir)
    before = contents(save_dir)
    with pytest.raises(ValueError, match="holds weights of other shapes .*--adaptive-input-factor 4.0 \\(the "
                                         "checkpoint's: 2.0\\)"):
        train_run(lm_data, save_dir, "--adaptive-input-factor", "4", "--adaptive-softmax-factor", "4", updates=4)
    assert contents(save_dir) == before


@pytest.mark.cli
@pytest.mark.parametrize("flags, message", [
    (["--tokens-per-sample", "64", "--context-window", "64"], "--context-window=64 must lie in \\[0, "
                                                              "--tokens-per-sample=64\\)"),
    (["--tokens-per-sample", "0"], "--tokens-per-sample=0 must be at least 1"),
    (["--max-tokens", "0"], "--max-tokens=0 must be at least 1"),
])
def test_script_flag_combinations_are_named_before_fairseqs_block_code(lm_data, earlier_run, flags, message, capsys):
    with pytest.raises(SystemExit, match=message):
        load_script("freq_loss").main([str(lm_data), str(earlier_run / "checkpoint_last.pt"), "--cpu", *flags])
