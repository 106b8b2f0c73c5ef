"""Two CPU processes under torchrun (gloo) train the same model as one process with the same global batch.

The masks are drawn for the global batch and sliced per rank, and the loss is weighted by masked
tokens across ranks, so only float rounding may differ. Dropout is off: each rank draws its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from deberta_edu import files
from deberta_edu.facts import LOG_FILE, STATE_FILE
from deberta_edu.model.checkpoint import load_tensors, save_tensors
from deberta_edu.model.emd import DebertaForMaskedLM
from deberta_edu.training.configs import get_config
from deberta_edu.training.engine import Distributed, Precision, build_optimizer
from deberta_edu.training.evaluate import Evaluator
from deberta_edu.training.mlm_data import MaskSpec, prepare_data
from deberta_edu.training.pretrain import train
from deberta_edu.training.state import (
    LOCK_NAME,
    RUN_FILES,
    check_output_folder,
    load_training_state,
    read_jsonl,
    save_training_state,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_processes_match_one(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # Each of the 2 ranks takes 8 of the 16 rows, in 2 micro-batches of 4 (gradient accumulation).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "deberta_edu.training.pretrain", "--config", "debug", "--steps", "6", "--dropout", "0",
           "--grad-accum", "2", "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = get_config("debug", steps=6, dropout=0.0)  # one process, the 16 rows in one batch
        train_data, val_data, _ = prepare_data(cfg)
        single = train(cfg, train_data, val_data, progress=False)
    finally:
        torch.set_num_threads(n)

    records = read_jsonl(out / LOG_FILE)
    ddp_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))  # rank 0 alone logs
    assert ddp_losses == pytest.approx(single.losses, rel=1e-5)
    ddp_eval = [r for r in records if r["kind"] == "eval"][-1]
    assert ddp_eval["val_tokens"] == single.metrics["val_tokens"]  # both ranks' halves, summed
    assert ddp_eval["val_loss"] == pytest.approx(single.metrics["val_loss"], rel=1e-5)

    weights, _ = load_tensors(out / "model.safetensors")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6, msg=name)
    state, meta = load_tensors(out / STATE_FILE)
    assert meta["world_size"] == "2" and {"rng.cpu.0", "rng.cpu.1"} <= set(state)  # each rank's dropout RNG


DRIVER = '''
import json, os, sys, time
if os.environ["RANK"] == "1":  # rank 1's clock runs three times as fast as rank 0's
    real, start = time.perf_counter, time.perf_counter()
    time.perf_counter = lambda: start + 3.0 * (real() - start)
from deberta_edu.training import pretrain
result = pretrain.main(sys.argv[2:])
total = sum(p.double().sum().item() for p in result.model.parameters())
open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w").write(json.dumps(total))
'''


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_a_time_budget_ends_every_rank_at_the_same_step(tmp_path):
    """With budget_seconds (lesson 4, the course model) every rank reads rank 0's clock: on their own clocks,
    which never agree exactly, one rank left the loop while another still waited in a collective (gloo: 'Is
    there a distributed collective mismatch?'), and the replicas stepped at different rates. Here rank 1's
    clock runs 3x fast; both ranks must end the run with the same weights."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           str(tmp_path), "--config", "debug", "--set", "budget_seconds=2", "--set", "steps=100000", "--dropout", "0",
           "--out", str(tmp_path / "run"), "--no-progress"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "0.json").read_text() == (tmp_path / "1.json").read_text()  # identical replicas
    steps = [r["step"] for r in read_jsonl(tmp_path / "run" / LOG_FILE) if r["kind"] == "train"]
    assert steps[-1] < 100_000  # the clock ended it


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_fewer_held_out_rows_than_ranks_are_each_counted_once(tmp_path):
    """One held-out row, two ranks: rank 1 has none. ``split`` of its empty share gave one empty chunk, which it
    fed to the model ('a batch of no sequences') while rank 0 waited in the all-reduce."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "deberta_edu.training.pretrain", "--config", "debug", "--steps", "1", "--dropout", "0",
           "--set", "eval_rows=1", "--out", str(tmp_path / "run"), "--no-progress"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ddp = [r for r in read_jsonl(tmp_path / "run" / LOG_FILE) if r["kind"] == "eval"][0]  # step 0: the same model
    cfg = get_config("debug", steps=1, dropout=0.0, eval_rows=1)
    torch.manual_seed(cfg.seed)
    model = DebertaForMaskedLM(cfg.model_config())  # the initial weights, as _Run builds them
    single = Evaluator(prepare_data(cfg)[1], cfg, MaskSpec.of(cfg), Distributed(), Precision("fp32", "cpu"))(model)
    assert ddp["val_tokens"] == single["val_tokens"] > 0
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-6)


def test_overwrite_deletes_nothing_while_a_trainer_holds_the_folder(tmp_path):
    """--overwrite deleted the checkpoint, log and config of a run still training there, and only then did the
    trainer's lock refuse the second run: the folder check must take the lock first."""
    for name in RUN_FILES:
        (tmp_path / name).write_text("x")
    with files.exclusive(tmp_path / LOCK_NAME, "the output folder"):  # a trainer at work (any rank 0)
        with pytest.raises(RuntimeError, match="in use by another process"):
            check_output_folder(tmp_path, resume=False, overwrite=True)
    assert all((tmp_path / name).exists() for name in RUN_FILES)
    check_output_folder(tmp_path, resume=False, overwrite=True)  # the trainer is gone: now it may
    assert not any((tmp_path / name).exists() for name in RUN_FILES)


def test_resuming_with_fewer_processes_than_saved_says_it_is_not_bit_exact(tmp_path):
    """Resumed by more processes the new ranks warn; resumed by fewer the saved ranks' dropout states were dropped
    without a word."""
    model = DebertaForMaskedLM(get_config("debug").model_config())
    path = save_training_state(tmp_path / STATE_FILE, model, build_optimizer(model, 1e-3), 3)
    tensors, meta = load_tensors(path)  # as two processes would have saved it
    save_tensors({**tensors, "rng.cpu.1": tensors["rng.cpu.0"].clone()}, path, {**meta, "world_size": "2"})
    with pytest.warns(UserWarning, match="saved by 2 processes and is resumed by 1"):
        load_training_state(path, model, build_optimizer(model, 1e-3))
