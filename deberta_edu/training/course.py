"""The course model: trained once by the recipe of ``get_config("course")``, committed in results/course-model/.

Lessons 2, 3 and 5 and the book show this model (2 and 5 a better one if a learner has trained it in lesson 4),
so every picture of attention maps and every fill-mask in the course comes from a model that learned
something. Its files are small and plain: fp16 weights (safetensors, config in the metadata), the
SentencePiece model, the training config, a downsampled log, and ``metrics.json`` with the held-out
numbers beside the word-frequency baseline on the same masked tokens.

    python -m deberta_edu.pretrain --config course --out data/checkpoints/course    # ~85 min on 2 cores
    python -m deberta_edu.training.course export data/checkpoints/course            # -> results/course-model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from deberta_edu import files
from deberta_edu.data.tokenizer import Tokenizer
from deberta_edu.facts import CONFIG_FILE, LOG_FILE, MODEL_FILE, RESULTS_ROOT, TOKENIZER_FILE
from deberta_edu.model.checkpoint import load_pretrained, save_pretrained

from .configs import TrainConfig
from .evaluate import Evaluator, unigram_baseline
from .mlm_data import MaskSpec, prepare_data
from .state import describe_machine, read_jsonl

COURSE_DIR = RESULTS_ROOT / "course-model"
METRICS_FILE = "metrics.json"
LOG_KEEP = 400  # records of the downsampled training log


def load_course_model(folder: str | Path | None = None):
    """(DebertaForMaskedLM with its EMD, Tokenizer) from the committed files, offline, in float32, eval mode."""
    folder = Path(folder) if folder is not None else COURSE_DIR
    if not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(
            f"no course model in {folder} ({MODEL_FILE} is missing). It is committed in results/course-model/; "
            "check out the repository again, or rebuild it with the commands in deberta_edu/training/course.py"
        )
    model = load_pretrained(folder).float().eval()
    return model, Tokenizer(folder / TOKENIZER_FILE)


def course_metrics(folder: str | Path | None = None) -> dict:
    """The committed metrics.json of the course model (held-out numbers, baseline, tokens, time, machine)."""
    folder = Path(folder) if folder is not None else COURSE_DIR
    return json.loads((folder / METRICS_FILE).read_text())


def weights_digest(folder: str | Path | None = None) -> str:
    """The first 16 hex digits of the sha256 of a model folder's weights file (default: the course model's):
    which weights a run used."""
    import hashlib

    folder = Path(folder) if folder is not None else COURSE_DIR
    return hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()[:16]


def course_label(metrics: dict | None = None) -> str:
    """How every figure names the model: name, tokens seen, held-out accuracy."""
    m = metrics or course_metrics()
    return (f"course model ({m['model']}, {m['tokens'] / 1e6:.0f}M tokens, held-out BBC masked-token "
            f"accuracy {m['held_out']['val_accuracy']:.1%})")


def _downsample(records: list[dict], keep: int) -> list[dict]:
    """At most ``keep`` training records, evenly spaced, the first and the last among them, and every eval
    record, in their order."""
    train = [n for n, r in enumerate(records) if r.get("kind") == "train"]
    if len(train) > keep:
        train = [train[round(i * (len(train) - 1) / (keep - 1))] for i in range(keep)]
    chosen = set(train)
    return [r for n, r in enumerate(records) if n in chosen or r.get("kind") == "eval"]


def export(run_dir: str | Path, out: str | Path = COURSE_DIR, command: str = "") -> dict:
    """Write the committed files of a finished course run; the held-out numbers are measured afresh here.

    Everything is written into a hidden folder beside ``out`` and measured there, and only then takes the
    place of ``out``: a missing corpus or an error halfway leaves the committed model as it was.
    """
    run_dir, out = Path(run_dir), Path(out)
    _check_destination(run_dir, out)
    cfg = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    model = load_pretrained(run_dir).float().eval()
    data = prepare_data(cfg)  # before anything is written
    staging = out.with_name(f".{out.name}.{os.getpid()}.export")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        save_pretrained(model, staging, run_dir / TOKENIZER_FILE, dtype=torch.float16)
        shutil.copyfile(run_dir / CONFIG_FILE, staging / CONFIG_FILE)
        records = read_jsonl(run_dir / LOG_FILE)
        with open(staging / LOG_FILE, "w") as f:
            for r in _downsample(records, LOG_KEEP):
                f.write(json.dumps(r) + "\n")
        metrics = _measure(staging, cfg, data, records, command)
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():
            out.rename(old)
        try:
            staging.rename(out)
        except BaseException:
            if old.exists():
                old.rename(out)  # the old export goes back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


EXPORTED = (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE)


def _check_destination(run_dir: Path, out: Path) -> None:
    """``out`` may be replaced whole: refuse one that holds anything but an export, or the run itself."""
    if run_dir.resolve() == out.resolve() or out.resolve() in run_dir.resolve().parents:
        raise ValueError(f"--out {out} holds the run {run_dir}; export it into a folder of its own")
    files.check_not_a_file(out)
    other = sorted(p.name for p in out.iterdir() if p.name not in EXPORTED) if out.is_dir() else []
    if other:
        raise ValueError(f"--out {out} holds more than an exported model ({', '.join(other[:4])}), and an export "
                         "replaces the folder whole; choose an empty or exported folder")


def _measure(folder: Path, cfg: TrainConfig, data, records: list[dict], command: str) -> dict:
    """metrics.json of the model in ``folder``: the fp16 weights that are committed, not the fp32 run."""
    from .engine import Distributed, Precision

    shipped, _ = load_course_model(folder)

    def held_out(c: TrainConfig) -> dict:
        return Evaluator(data[1], c, MaskSpec.of(c, data[2]), Distributed(), Precision("fp32", "cpu"))(shipped)

    every_row = cfg.replace(eval_rows=10_000)
    held, base = held_out(every_row), unigram_baseline(every_row, data)
    held_spans = held_out(every_row.replace(whole_word_masking=True))  # the harder test: whole words hidden
    train = [r for r in records if r.get("kind") == "train"]
    c = shipped.config
    return {
        "model": f"DeBERTa v3 layout, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                 f"{sum(p.numel() for p in shipped.parameters()) / 1e6:.2f}M parameters, EMD {'on' if c.emd else 'off'}",
        "config": cfg.name, "command": command, "source": cfg.source, "held_out_source": cfg.eval_source or cfg.source,
        "tokens": train[-1]["tokens"], "steps": train[-1]["step"], "train_time_s": round(train[-1]["train_time"]),
        "wall_time_s": round(train[-1]["time"]), "machine": describe_machine(), "exported": time.strftime("%Y-%m-%d"),
        "held_out": held, "unigram_baseline": base,
        "below_unigram_nats": base["val_loss"] - held["val_loss"],
        "masking": "whole-word spans" if cfg.whole_word_masking else "tokens (15%, 80/10/10)",
        "held_out_whole_word_masking": held_spans,
    }


def differences_from_course(saved: dict) -> list[str]:
    """The fields in which a run's saved train_config.json leaves the trajectory of ``get_config("course")``."""
    from .configs import CONFIGS, trajectory_differences

    return sorted(trajectory_differences(saved, CONFIGS["course"]))


def main(argv=None) -> None:
    import sys

    p = argparse.ArgumentParser(prog="python -m deberta_edu.training.course", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write results/course-model from a finished run folder")
    e.add_argument("run_dir", help="the --out folder of a finished `python -m deberta_edu.pretrain --config course`")
    e.add_argument("--out", default=str(COURSE_DIR), help="where to write (default: the committed %(default)s)")
    e.add_argument("--any-config", action="store_true", help="export a run of another config than 'course'")
    args = p.parse_args(argv)
    try:
        saved = Path(args.run_dir) / CONFIG_FILE
        if not saved.exists():
            raise FileNotFoundError(f"{args.run_dir} holds no run ({CONFIG_FILE} is missing)")
        saved = json.loads(saved.read_text())
        name, differ = saved.get("name"), differences_from_course(saved)
        if differ and not args.any_config:
            raise ValueError(f"{args.run_dir} is a run of config {name!r}, not get_config('course') (it differs in "
                             f"{', '.join(differ)}); the course model is trained by get_config('course'); add "
                             "--any-config to export it anyway")
        flags = "".join(f" {f}" for f, on in (("--any-config", args.any_config),
                                              (f"--out {args.out}", args.out != str(COURSE_DIR))) if on)
        m = export(args.run_dir, args.out, command=f"python -m deberta_edu.pretrain --config {name} --out "
                   f"{args.run_dir}; python -m deberta_edu.training.course export {args.run_dir}{flags}")
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps({k: m[k] for k in ("tokens", "held_out", "unigram_baseline", "below_unigram_nats")}, indent=2))


if __name__ == "__main__":
    main()
