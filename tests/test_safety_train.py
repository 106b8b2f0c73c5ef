"""Issue 14, the training half: each way to lose a run, or to be told nothing useful, reproduced and refused.

Every test here failed before its fix: a second `pretrain` into a run's folder emptied its log; two trainers
shared one folder; flipped bytes in a state file were trained on; a damaged, empty or foreign state file, or
one of another model, gave a traceback from deep inside safetensors or load_state_dict; a model file whose
config claims 100,000 layers allocated them; temporary files of killed writers piled up; checkpoints were
always 0600; the command lines crashed on values they could name.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deberta_edu import files
from deberta_edu.facts import LOG_FILE, MODEL_FILE, STATE_FILE
from deberta_edu.model.checkpoint import (
    CHECKSUM_KEY,
    load_pretrained,
    load_tensors,
    save_pretrained,
    save_tensors,
)
from deberta_edu.model.config import make_config
from deberta_edu.model.emd import DebertaForMaskedLM
from deberta_edu.model.encoder import DebertaModel
from deberta_edu.training import bench, finetune, pretrain
from deberta_edu.training.configs import apply_overrides, get_config
from deberta_edu.training.engine import build_optimizer, check_device
from deberta_edu.training.state import load_training_state, save_training_state

ROOT = Path(__file__).resolve().parent.parent
# the debug config on synthetic data: 20 steps in about a second
QUICK = ["--config", "debug", "--data", "synthetic", "--no-progress", "--set", "eval_every=0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deberta_edu.pretrain", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """The run failed with one line that starts 'error:' and names ``words``, and no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr
    for w in words:
        assert w in last, last
    return last


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "debug"
    r = cli(*QUICK, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for p in run.iterdir():
        files.copy(p, to / p.name)
    return to


# ----------------------------------------------------------------------------- data loss


def test_a_second_run_into_a_runs_folder_is_refused(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(cli(*QUICK, "--out", str(out)), str(out), "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    one_line_error(cli(*QUICK, "--out", str(out), "--resume", "--overwrite"), "one of them")
    one_line_error(cli(*QUICK, "--out", str(tmp_path / "typo"), "--resume"), "nothing to resume", "does not exist")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "a-file").write_text("")
    one_line_error(cli(*QUICK, "--out", str(tmp_path / "a-file")), "is a file; name a folder")
    r = cli(*QUICK, "--out", str(out), "--overwrite")  # asked for: the run starts again
    assert r.returncode == 0, r.stderr
    assert (out / MODEL_FILE).exists() and len((out / LOG_FILE).read_text().splitlines()) > 1


def test_an_empty_or_new_folder_needs_no_flag(tmp_path):
    (tmp_path / "empty").mkdir()
    pretrain.check_output_folder(tmp_path / "empty", resume=False, overwrite=False)
    pretrain.check_output_folder(tmp_path / "new", resume=False, overwrite=False)
    (tmp_path / "empty" / ".hidden").write_text("")  # a lock file or a stale temp file is not a run
    pretrain.check_output_folder(tmp_path / "empty", resume=False, overwrite=False)


def test_overwrite_removes_the_files_of_the_run_it_starts_again(tmp_path):
    """A run started again and cut before its first checkpoint must not leave the old run's state to --resume."""
    for name in (STATE_FILE, LOG_FILE, MODEL_FILE, "train_config.json", "notes.txt"):
        (tmp_path / name).write_text("old")
    pretrain.check_output_folder(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".trainer.lock", "notes.txt"]  # the check takes the lock


def test_two_trainers_on_one_folder(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "deberta_edu.pretrain", *QUICK, "--steps", "4000",
                              "--set", "log_every=10", "--set", "save_every=0", "--out", str(out)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (out / LOG_FILE).exists() and time.time() < deadline:  # the first holds the lock by then
            time.sleep(0.2)
        assert (out / LOG_FILE).exists(), "the first trainer never started"
        second = cli(*QUICK, "--out", str(out), "--resume")
        one_line_error(second, "in use by another process", f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    # the lock went with the process: a resume can take the folder now
    assert cli(*QUICK, "--out", str(out), "--resume").returncode == 0


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    lock = tmp_path / ".lock"
    with files.exclusive(lock, "the thing"):
        code = (f"from deberta_edu import files\nwith files.exclusive({str(lock)!r}, 'the thing'):\n    pass")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode != 0 and f"the thing is in use by another process (pid {os.getpid()}" in r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def small_state(tmp_path) -> tuple[Path, DebertaForMaskedLM, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=50, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2))
    opt = build_optimizer(model, 1e-3)
    path = save_training_state(tmp_path / STATE_FILE, model, opt, 3, metadata={"train_config": {"a": 1}})
    return path, model, opt


def flip_a_byte(path: Path, from_end: int = 100) -> None:
    blob = bytearray(path.read_bytes())
    blob[-from_end] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_flipped_bytes_in_a_state_file_are_found(tmp_path):
    path, model, opt = small_state(tmp_path)
    assert len(load_tensors(path)[1][CHECKSUM_KEY]) == 64
    flip_a_byte(path)
    with pytest.raises(ValueError, match=f"{path} is damaged: its tensors do not match the checksum"):
        load_training_state(path, model, opt)


def test_flipped_bytes_in_a_model_file_are_found(tmp_path):
    path, model, _ = small_state(tmp_path)
    save_pretrained(model, tmp_path / "m")
    load_pretrained(tmp_path / "m")
    flip_a_byte(tmp_path / "m" / MODEL_FILE, 10)
    with pytest.raises(ValueError, match="is damaged"):
        load_pretrained(tmp_path / "m")


def test_resuming_a_finished_run_with_a_damaged_state_keeps_the_model(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    model_before = (out / MODEL_FILE).read_bytes()
    flip_a_byte(out / STATE_FILE)
    one_line_error(cli(*QUICK, "--out", str(out), "--resume"), str(out / STATE_FILE), "damaged")
    assert (out / MODEL_FILE).read_bytes() == model_before


@pytest.mark.parametrize("damage, words", [
    ("empty", "shorter than any"),
    ("truncated", "truncated or damaged"),
    ("garbage", "truncated or damaged"),
    ("json", "not JSON"),
])
def test_a_broken_state_file_is_named(tmp_path, damage, words):
    path, model, opt = small_state(tmp_path)
    blob = path.read_bytes()
    broken = {"empty": b"", "truncated": blob[: len(blob) // 2], "garbage": os.urandom(4096),
              "json": (20).to_bytes(8, "little") + b"{not json at all....." + bytes(64)}[damage]
    path.write_bytes(broken)
    with pytest.raises(ValueError, match=str(path)) as e:
        load_training_state(path, model, opt)
    assert words in str(e.value)


def test_resume_with_another_config_says_so_before_loading_weights(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    # another shape: the project's "trained with another config" check, not load_state_dict's traceback
    last = one_line_error(cli(*QUICK, "--out", str(out), "--resume", "--set", "model.hidden_size=16"),
                          "trained with another config", "model_overrides")
    assert "size mismatch" not in last
    last = one_line_error(cli(*QUICK, "--out", str(out), "--resume", "--set", "variant=bert"),
                          "trained with another config", "variant")


def test_a_state_of_another_model_is_refused_by_shape(tmp_path):
    path, _, _ = small_state(tmp_path)
    other = DebertaForMaskedLM(make_config("tiny", vocab_size=50, hidden_size=64, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2))
    with pytest.raises(ValueError, match="holds the weights of another model"):
        load_training_state(path, other, build_optimizer(other, 1e-3))
    for layers in (1, 3):  # fewer layers, or more: tensors in one of the two only, named before torch sees them
        other = DebertaForMaskedLM(make_config("tiny", vocab_size=50, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=layers, num_attention_heads=2))
        with pytest.raises(ValueError, match="in one only"):
            load_training_state(path, other, build_optimizer(other, 1e-3))


def test_a_check_runs_before_any_tensor_is_read(tmp_path, monkeypatch):
    path, model, opt = small_state(tmp_path)
    from deberta_edu.training import state

    monkeypatch.setattr(state, "load_tensors", lambda p: pytest.fail("tensors read before the check"))

    def refuse(meta):
        assert json.loads(meta["train_config"]) == {"a": 1}
        raise ValueError("another run")

    with pytest.raises(ValueError, match="another run"):
        load_training_state(path, model, opt, check=refuse)


# ----------------------------------------------------------------------------- denial of service


def test_a_model_file_claiming_many_layers_is_refused_before_any_is_built(tmp_path):
    path, model, _ = small_state(tmp_path)
    save_pretrained(model, tmp_path / "m")
    tensors, meta = load_tensors(tmp_path / "m" / MODEL_FILE)
    config = json.loads(meta["config"])
    start = time.time()
    for change, words in [({"num_hidden_layers": 100_000}, "num_hidden_layers=100000, but its weights hold 2"),
                          ({"intermediate_size": 10**9}, "do not fit the config"),
                          ({"vocab_size": 10**9}, "vocab_size=1000000000"),
                          ({"num_hidden_layers": 1}, "num_hidden_layers=1, but its weights hold 2")]:
        save_tensors(tensors, tmp_path / "m" / MODEL_FILE, {**meta, "config": json.dumps({**config, **change})})
        with pytest.raises(ValueError, match=words):
            load_pretrained(tmp_path / "m")
    assert time.time() - start < 20


def test_a_model_file_missing_a_tensor_names_it(tmp_path):
    path, model, _ = small_state(tmp_path)
    save_pretrained(model, tmp_path / "m")
    tensors, meta = load_tensors(tmp_path / "m" / MODEL_FILE)
    del tensors["head.bias"]
    save_tensors(tensors, tmp_path / "m" / MODEL_FILE, meta)
    with pytest.raises(ValueError, match="do not fit the config written with them .*no 'head.bias'"):
        load_pretrained(tmp_path / "m")


def test_a_saved_encoder_loads_back_as_an_encoder(tmp_path):
    torch.manual_seed(0)
    encoder = DebertaModel(make_config("tiny", vocab_size=50, hidden_size=32, intermediate_size=64,
                                       num_attention_heads=2)).eval()
    save_pretrained(encoder, tmp_path / "e")
    loaded = load_pretrained(tmp_path / "e")
    assert type(loaded) is DebertaModel
    ids = torch.randint(5, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, encoder(ids).last_hidden_state)


def test_a_config_field_this_version_does_not_know_is_ignored_on_load(tmp_path):
    """A model file written by a later version, whose config has a field more, still loads."""
    path, model, _ = small_state(tmp_path)
    save_pretrained(model, tmp_path / "m")
    tensors, meta = load_tensors(tmp_path / "m" / MODEL_FILE)
    config = json.loads(meta["config"])
    save_tensors(tensors, tmp_path / "m" / MODEL_FILE, {**meta, "config": json.dumps({**config, "added_later": 1})})
    assert load_pretrained(tmp_path / "m").config == model.config


def test_a_header_claiming_more_than_the_file_is_refused(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header claims 1,000,000,000,000 bytes"):
        load_pretrained(path)


# ----------------------------------------------------------------------------- files left behind


def test_temporary_files_of_killed_writers_go_at_the_next_save(tmp_path):
    path, model, opt = small_state(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = [tmp_path / f".{STATE_FILE}.{dead.pid}.{i:08x}.tmp" for i in range(3)]
    live = tmp_path / f".{STATE_FILE}.1.00000000.tmp"  # pid 1 is alive: its writer may still be writing
    for p in [*stale, live]:
        p.write_bytes(bytes(1000))
    save_training_state(path, model, opt, 4)
    assert not any(p.exists() for p in stale) and live.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoints_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path, model, _ = small_state(tmp_path)
        save_pretrained(model, tmp_path / "m")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "m" / MODEL_FILE).stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- errors that speak


@pytest.mark.parametrize("setting, words", [
    ("lr=abc", "lr must be a number, got 'abc'"),
    ("steps=2.5", "steps must be a whole number"),
    ("model.vocab_size=10", "--set vocab_size=N"),
    ("seq_length=0", "seq_length must be at least 8"),
    ("seq_length=1", "seq_length must be at least 8"),
    ("mlm_probability=1.5", "mlm_probability must be in (0, 1)"),
    ("compile=no", "compile must be true or false, got 'no'"),  # a non-empty string, which Python reads as true
    ("model.emd=off", "emd must be true or false, got 'off'"),
])
def test_bad_settings_are_named(setting, words):
    with pytest.raises(ValueError) as e:
        apply_overrides(get_config("debug"), [setting])
    assert words in str(e.value)


def test_flags_read_as_json_or_as_python_writes_them():
    cfg = apply_overrides(get_config("debug"), ["model.emd=False", "compile=true", "whole_word_masking=False"])
    assert cfg.model_overrides["emd"] is False and cfg.compile is True and cfg.whole_word_masking is False
    assert cfg.model_config().emd is False


@pytest.mark.parametrize("args, words", [
    (["--device", "cuda"], "no GPU to use; use --device cpu"),
    (["--device", "toaster"], "not a device name"),
    (["--set", "lr=abc"], "lr must be a number"),
    (["--set", "model.hidden_size=\"big\""], "hidden_size must be a whole number"),
    (["--set", "seq_length=1"], "seq_length must be at least 8"),
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--set", "whole_word_masking=off"], "whole_word_masking must be true or false"),
])
def test_the_pretrain_command_line_names_what_is_wrong(tmp_path, args, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(cli(*QUICK, *args, "--out", str(tmp_path / "run")), words)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_bench_reads_any_gpu_name_as_a_gpu():
    from argparse import Namespace

    assert bench.on_gpu(Namespace(device="cuda:1")) and bench.on_gpu(Namespace(device="cuda"))
    assert not bench.on_gpu(Namespace(device="cpu"))


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            check_device("cuda:1")


@pytest.mark.parametrize("local_rank", [0, 1])
def test_under_torchrun_a_gpu_named_by_number_must_be_the_processs_own(monkeypatch, local_rank):
    """--device cuda:0 under torchrun put every process on GPU 0, where NCCL stops with a duplicate-GPU error
    (or the processes share one card): it is refused in words before any set_device, in every process but the one
    it names. 'cuda' gives each process cuda:<LOCAL_RANK>. (A GPU machine is stood in for: check_device only
    parses.)"""
    from deberta_edu.training import engine

    monkeypatch.setattr(engine, "check_device", torch.device)
    set_to = []
    monkeypatch.setattr(torch.cuda, "set_device", set_to.append)
    monkeypatch.setattr(engine.dist, "init_process_group", lambda backend: set_to.append(backend))
    monkeypatch.setattr(engine.dist, "is_initialized", lambda: False)
    for name, value in {"WORLD_SIZE": "2", "RANK": str(local_rank), "LOCAL_RANK": str(local_rank)}.items():
        monkeypatch.setenv(name, value)
    if local_rank:
        with pytest.raises(ValueError, match="in process 1 of 2 .*its own GPU, cuda:<LOCAL_RANK>; pass --device cuda"):
            engine.setup_distributed("cuda:0")
        assert set_to == []
    else:
        assert engine.setup_distributed("cuda:0").device == torch.device("cuda", 0)
    set_to.clear()
    assert engine.setup_distributed("cuda").device == torch.device("cuda", local_rank)
    assert set_to == [torch.device("cuda", local_rank), "nccl"]


@pytest.mark.parametrize("args, words", [
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--length", "0"], "--length must be at least 1"),
    (["--heads", "3"], "multiple of --heads 3"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--device", "cuda:7"], "cuda"),
    (["--vocab", "5"], "--vocab must be at least 6"),
    (["--against", "bert", "--full-logits"], "--full-logits is about our MLM head"),
    (["--json", "/no/such/folder/bench.json"], "the folder /no/such/folder does not exist"),
])
def test_the_bench_command_line_names_what_is_wrong(args, words, capsys):
    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(SystemExit) as e:
        bench.parse_args(args)
    assert str(e.value).startswith("error: ") and words in str(e.value)


@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--lams", "-1"], "must be >= 0"),
    (["--seeds", "1", "1"], "repeats a seed"),
])
def test_the_finetune_command_line_names_what_is_wrong(args, words):
    with pytest.raises(SystemExit) as e:
        finetune.main(args)
    assert str(e.value).startswith("error: ") and words in str(e.value)


def test_finetune_of_a_damaged_encoder_is_one_line(tmp_path):
    path, model, _ = small_state(tmp_path)
    save_pretrained(model, tmp_path / "m")
    (tmp_path / "m" / "tokenizer.model").write_bytes(b"x")
    flip_a_byte(tmp_path / "m" / MODEL_FILE, 10)
    with pytest.raises(SystemExit) as e:
        finetune.main(["--encoder", str(tmp_path / "m"), "--out", str(tmp_path / "r.json")])
    assert "is damaged" in str(e.value)


def test_a_results_file_names_the_encoder_by_what_it_ran(tmp_path):
    from deberta_edu.training.course import COURSE_DIR, course_metrics

    label = finetune.describe_encoder(COURSE_DIR)  # the course model: its tokens and held-out accuracy
    m = course_metrics()
    assert f"{m['tokens'] / 1e6:.0f}M tokens" in label and f"{m['held_out']['val_accuracy']:.1%}" in label
    run = tmp_path / "run"  # a clock-budget run: its steps are only a cap, never what it ran
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"name": "course", "steps": 20000, "budget_seconds": 5000,
                                                       "batch_size": 64, "seq_length": 128, "source": "bbc"}))
    assert "20000" not in finetune.describe_encoder(run) and "5000 s of training" in finetune.describe_encoder(run)
    (run / "train_config.json").write_text(json.dumps({"name": "lesson4-smoke", "steps": 25, "source": "bbc"}))
    assert finetune.describe_encoder(run).startswith("SMOKE-size checkpoint, not trained: run (lesson4-smoke")
