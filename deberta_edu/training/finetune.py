"""Fine-tuning a pretrained encoder for sequence classification, with or without SiFT.

It reuses the pretraining engine's pieces (``engine``, ``state``): AdamW without decay on biases and
LayerNorm, warmup then linear decay, clipping, mixed precision, the progress bar and the JSONL log.
Its batches are the same ``Batch`` as pretraining's, with one class per sequence as labels.
The adversarial loss of ``sift`` is simply added inside the loss function, so λ = 0 is exactly plain
fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from deberta_edu.data.batch import Batch
from deberta_edu.facts import LOG_FILE, RESULTS_ROOT
from deberta_edu.model.checkpoint import save_tensors
from deberta_edu.model.classify import DebertaForSequenceClassification
from deberta_edu.model.emd import DebertaForMaskedLM

from .engine import (
    Precision,
    build_optimizer,
    generator,
    optimizer_step,
    progress_bar,
    set_lr,
    warmup_linear,
)
from .journal import Journal, replaced_by_other_settings
from .sift import VAT, AdversarialConfig, SiFT, build_adversary
from .significance import fraction_right, hit_strings, hits_or_accuracy, repeated_seeds
from .state import JsonlLogger


@dataclass
class FinetuneConfig:
    lr: float = 1e-4
    batch_size: int = 32
    epochs: float = 3.0
    max_length: int = 64
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    max_train_examples: int | None = None  # a smoke size
    adversarial: AdversarialConfig = field(default_factory=lambda: AdversarialConfig(lam=0.0))
    precision: str = "auto"
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    progress: bool = True


@dataclass
class FinetuneResult:
    dev_accuracy: float
    test_accuracy: float
    history: list[dict]
    model: DebertaForSequenceClassification
    config: FinetuneConfig
    test_hits: list[bool] | None = None  # whether each test example was right, in test order


def encode(examples, tokenizer, max_length: int) -> tuple[list[list[int]], torch.Tensor]:
    """[CLS] + the snippet's pieces (cut to fit) + [SEP] for each example, and the labels."""
    ids = [[tokenizer.cls_id, *tokenizer.encode(e.text)[: max_length - 2], tokenizer.sep_id] for e in examples]
    return ids, torch.tensor([e.label for e in examples])


def collate(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest row: (input_ids, attention_mask), both (B, L)."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = (torch.arange(L) < torch.tensor([len(r) for r in rows])[:, None]).long()  # 1 on each row's own tokens
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, mask


def classification_batch(rows: list[list[int]], labels: torch.Tensor) -> Batch:
    """The padded rows and their classes, as the training loop and ``accuracy`` read them."""
    ids, mask = collate(rows)
    return Batch(input_ids=ids, labels=labels, attention_mask=mask)


@torch.no_grad()
def accuracy(model, rows, labels, batch_size: int = 128, device="cpu", per_document: bool = False) -> float | list[bool]:
    """The fraction of ``rows`` classified right (with ``per_document``, whether each one was); the model is
    scored in eval mode and left in the mode it came in."""
    was_training = model.training
    model.eval()
    predicted = []
    for s in range(0, len(rows), batch_size):
        batch = classification_batch(rows[s : s + batch_size], labels[s : s + batch_size])
        predicted += model(batch.input_ids.to(device), batch.attention_mask.to(device)).logits.argmax(-1).tolist()
    model.train(was_training)
    return hits_or_accuracy(predicted, labels.tolist(), per_document)


def classifier_from(pretrained: DebertaForMaskedLM, dropout: float) -> DebertaForSequenceClassification:
    """A classifier whose encoder is a copy of ``pretrained``'s; its head is new (from the global RNG)."""
    config = pretrained.config.replace(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = DebertaForSequenceClassification(config, num_labels=2)
    model.deberta.load_state_dict(pretrained.deberta.state_dict())
    return model


def training_batches(rows: list[list[int]], labels: torch.Tensor, cfg: FinetuneConfig, steps_per_epoch: int,
                     steps: int):
    """(step, Batch) for each of ``steps`` updates; a fresh shuffle per epoch, drawn from (seed, epoch)."""
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        epoch, k = divmod(step, steps_per_epoch)
        if k == 0:
            order = torch.randperm(len(rows), generator=generator(cfg.seed, "order", epoch))
        idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size].tolist()
        yield step, classification_batch([rows[i] for i in idx], labels[idx])


def sift_loss(cfg: FinetuneConfig, adversary: SiFT | VAT, hidden_size: int, stats: dict):
    """loss_fn(model, batch): cross-entropy + λ x the adversarial loss (its numbers go to ``stats``)."""

    def loss_fn(model, batch: Batch) -> torch.Tensor:
        ids, mask = batch.input_ids, batch.attention_mask
        out = model(ids, mask, labels=batch.labels)
        if cfg.adversarial.lam == 0:
            return out.loss
        adv, s = adversary.loss(lambda: model(ids, mask).logits, out.logits, (*ids.shape, hidden_size), mask)
        stats.update(s)
        return out.loss + adv

    return loss_fn


def finetune(
    pretrained: DebertaForMaskedLM,
    splits: dict,
    tokenizer,
    cfg: FinetuneConfig | None = None,
    out_dir: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``pretrained``'s encoder on ``splits`` ({"train", "dev", "test"} of Examples)."""
    cfg = cfg or FinetuneConfig()
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)  # the new head's initialisation and dropout
    model = classifier_from(pretrained, cfg.dropout).to(device).train()

    train = splits["train"][: cfg.max_train_examples] if cfg.max_train_examples else splits["train"]
    train_rows, train_labels = encode(train, tokenizer, cfg.max_length)
    dev_rows, dev_labels = encode(splits["dev"], tokenizer, cfg.max_length)
    test_rows, test_labels = encode(splits["test"], tokenizer, cfg.max_length)

    steps_per_epoch = max(1, len(train_rows) // cfg.batch_size)
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warmup = int(cfg.warmup_fraction * total)
    optimizer = build_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay)
    precision = Precision(cfg.precision, device)
    frequencies = None
    if cfg.adversarial.method == "vat":  # Miyato et al. weight the embedding statistics by word counts
        frequencies = torch.bincount(torch.tensor([i for r in train_rows for i in r]),
                                     minlength=model.config.vocab_size).float()
    adversary = build_adversary(model.deberta.embeddings, cfg.adversarial, generator(cfg.seed, "sift"), frequencies)
    stats: dict = {}  # the adversarial loss's numbers of the last step
    loss_fn = sift_loss(cfg, adversary, model.config.hidden_size, stats)
    log = JsonlLogger(Path(out_dir) / LOG_FILE if out_dir else None)

    bar = progress_bar(total, desc=f"fine-tuning (λ={cfg.adversarial.lam}, seed {cfg.seed})", enabled=cfg.progress)
    for step, batch in training_batches(train_rows, train_labels, cfg, steps_per_epoch, total):
        set_lr(optimizer, cfg.lr * warmup_linear(step, warmup, total))
        weights = [batch.num_targets]  # the examples of the batch
        if precision.scaler.is_enabled():  # fp16: the adversary's ascent backward is loss-scaled like training's
            adversary.grad_scale = precision.scaler.get_scale()
        out = optimizer_step(model, optimizer, [batch.to(device)], loss_fn, weights, precision=precision)
        if not torch.isfinite(out.loss):  # as in pretraining: a diverged run is said, not scored as a result
            raise FloatingPointError(f"the fine-tuning loss became {out.loss.item()} at step {step + 1} (lr {cfg.lr:g}, "
                                     f"λ {cfg.adversarial.lam}, seed {cfg.seed}); lower the lr, or use precision='fp32'")
        record = {"step": step + 1, "loss": out.loss.item(), **stats}
        if (step + 1) % max(1, total // 4) == 0 or step + 1 == total:
            record["dev_accuracy"] = accuracy(model, dev_rows, dev_labels, device=device)
        log.log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        bar.update()
    bar.close()
    dev_acc = accuracy(model, dev_rows, dev_labels, device=device)
    test_hits = accuracy(model, test_rows, test_labels, device=device, per_document=True)
    if out_dir:
        save_classifier(model, cfg, out_dir)
    return FinetuneResult(dev_acc, fraction_right(test_hits), log.records, model.eval(), cfg, test_hits)


def save_classifier(model: DebertaForSequenceClassification, cfg: FinetuneConfig, out_dir) -> Path:
    """classifier.safetensors in out_dir: the weights, the model config and how it was fine-tuned."""
    meta = {"config": json.dumps(model.config.to_dict()), "kind": "classifier", "num_labels": "2",
            "finetune": json.dumps({**asdict(cfg), "adversarial": asdict(cfg.adversarial)})}
    return save_tensors(model.state_dict(), Path(out_dir) / "classifier.safetensors", meta)


def random_weights(like: DebertaForMaskedLM, seed: int) -> DebertaForMaskedLM:
    """The architecture of ``like`` with fresh weights drawn with ``seed``: the random-init baseline."""
    torch.manual_seed(seed)
    return DebertaForMaskedLM(like.config)


def compare(pretrained, splits, tokenizer, lams=(0.0, 1.0), seeds=(0, 1, 2), adversarial: dict | None = None,
            random_init: bool = False, journal: Journal | None = None, **cfg_changes) -> dict:
    """Fine-tune with each λ and seed; {λ: {"test": [acc per seed], "dev": [...], "mean", "std", "adv_loss",
    "hits": [which test examples each seed got right, as ``hit_strings``]}}.

    ``adversarial``: AdversarialConfig fields other than λ (default: SiFT with the official settings).
    ``random_init``: each seed starts from its own random weights in ``pretrained``'s architecture
    (``random_weights``), so the seeds sample random initialisations, not one draw of them.
    ``journal``: keeps each run's numbers as it ends, and gives back those an earlier, cut command made.
    """

    def one_run(lam: float, seed: int) -> dict:
        cfg = FinetuneConfig(seed=seed, adversarial=AdversarialConfig(**{**(adversarial or {}), "lam": lam}),
                             **cfg_changes)
        r = finetune(random_weights(pretrained, seed) if random_init else pretrained, splits, tokenizer, cfg)
        return {"test": r.test_accuracy, "dev": r.dev_accuracy, "hits": r.test_hits,
                "adv_loss": r.history[-1].get("adv_loss")}  # the last step's, None if λ = 0

    journal, table = journal or Journal(), {}
    for lam in lams:
        runs = [journal.run(f"λ={lam}, seed {seed}", lambda lam=lam, seed=seed: one_run(lam, seed))
                for seed in seeds]
        tests = [r["test"] for r in runs]
        table[lam] = {"test": tests, "dev": [r["dev"] for r in runs], "mean": statistics.mean(tests),
                      "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                      "adv_loss": [r["adv_loss"] for r in runs], "hits": hit_strings([r["hits"] for r in runs])}
    return table


def _check_args(args) -> str | None:
    """What is wrong with the command line, in one sentence, or None."""
    if not args.epochs > 0:
        return f"--epochs must be > 0, got {args.epochs}"
    if not args.lr > 0:
        return f"--lr must be > 0, got {args.lr}"
    if any(lam < 0 for lam in args.lams):
        return f"--lams are SiFT's weights λ and must be >= 0, got {args.lams}"
    if args.step_eps < 0:
        return f"--step-eps must be >= 0, got {args.step_eps}"
    if problem := repeated_seeds(args.seeds):
        return problem
    if Path(args.out).is_dir():
        return f"--out {args.out} is a folder; give the path of the JSON file to write"
    return None


def describe_encoder(folder: str | Path) -> str:
    """What a results file calls the encoder in ``folder``: an exported course model by its name, tokens and
    held-out accuracy (its metrics.json); a run folder by its training config."""
    from deberta_edu.model.checkpoint import describe_checkpoint

    from .course import METRICS_FILE, course_label, course_metrics

    folder = Path(folder)
    if (folder / METRICS_FILE).exists():
        return f"{course_label(course_metrics(folder))}, {folder.name}"
    return describe_checkpoint(folder)


def _load_encoder(folder: Path):
    """(pretrained model, tokenizer) from ``folder``, or the command exits saying what is wrong."""
    from deberta_edu.data.tokenizer import load_tokenizer
    from deberta_edu.facts import MODEL_FILE, TOKENIZER_FILE
    from deberta_edu.model.checkpoint import load_pretrained

    if not ((folder / MODEL_FILE).exists() and (folder / TOKENIZER_FILE).exists()):
        sys.exit(f"error: no pretrained model in {folder} ({MODEL_FILE} + {TOKENIZER_FILE}). Pass --encoder FOLDER: "
                 "results/course-model, or a run of `python -m deberta_edu.pretrain --config lesson4`.")
    try:
        model, tokenizer = load_pretrained(folder), load_tokenizer(folder / TOKENIZER_FILE)
    except (ValueError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    if model.config.vocab_size != tokenizer.vocab_size:
        sys.exit(f"error: the model in {folder} has a vocabulary of {model.config.vocab_size}, its tokenizer "
                 f"{tokenizer.vocab_size}: they were not trained together")
    return model, tokenizer


def main(argv=None):
    """python -m deberta_edu.finetune: lesson 5's comparison at full size, written as JSON."""
    from deberta_edu.data.sentiment import load_splits

    from .course import COURSE_DIR, weights_digest
    from .state import describe_machine

    p = argparse.ArgumentParser(prog="python -m deberta_edu.finetune",
                                description="Fine-tune a pretrained model on sentiment, with and without SiFT")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed and λ (default: 0 1 2)")
    p.add_argument("--lams", type=float, nargs="+", default=[0.0, 1.0],
                   help="SiFT's weights λ, 0 for plain fine-tuning (default: 0 1)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training split (default: 1)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate (lesson 5's 1e-3 was chosen on the dev split: results/sift/lr-grid/)")
    p.add_argument("--step-eps", type=float, default=AdversarialConfig.step_eps,
                   help="SiFT's ascent step is η g / (step_eps + ‖g‖∞); the official 1e-6 by default; 0 guards only an exact zero")
    p.add_argument("--out", default=str(RESULTS_ROOT / "sift" / "results.json"),
                   help="the JSON file to write (default: the committed %(default)s; the runs of a cut command with "
                        "the same settings are read back from its .draws.jsonl, not repeated)")
    p.add_argument("--encoder", default=str(COURSE_DIR),
                   help="folder of a pretrained model (default: the course model, the encoder lesson 5 shows)")
    p.add_argument("--random-init", action="store_true",
                   help="the baseline: the encoder's architecture and tokenizer with fresh weights, drawn with each seed")
    p.add_argument("--overwrite", action="store_true", help="replace an --out written with other settings")
    args = p.parse_args(argv)
    start = time.time()
    problem = _check_args(args) or replaced_by_other_settings(p, args)
    if problem:
        sys.exit(f"error: {problem}")
    folder = Path(args.encoder)
    try:
        splits = load_splits()  # before anything is written
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    pretrained, tokenizer = _load_encoder(folder)
    origin = describe_encoder(folder)
    if args.random_init:  # the same network from random weights, fine-tuned by the same recipe
        origin = f"random weights (drawn anew with each seed) in the architecture of: {origin}"
    adversarial = {"step_eps": args.step_eps}
    recipe = {"epochs": args.epochs, "lr": args.lr, "batch_size": 32, "max_length": 64}
    settings = {"encoder": origin, "weights": weights_digest(folder), "adversarial": adversarial, **recipe}
    # each run is kept beside the results as it ends: a cut command, run again, goes on from there
    journal = Journal.for_command(Path(args.out).with_suffix(".draws.jsonl"), settings)
    try:
        table = compare(pretrained, splits, tokenizer, lams=tuple(args.lams), seeds=tuple(args.seeds),
                        adversarial=adversarial, random_init=args.random_init, journal=journal, **recipe)
    except FloatingPointError as err:  # a diverged fine-tuning, said in words as pretrain's command does
        sys.exit(f"error: {err}")
    command = "python -m deberta_edu.finetune " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command,
              "encoder": origin, "machine": describe_machine(),
              "wall_time_s": round(journal.wall_time(start), 1), "seeds": args.seeds,  # cut runs' time too
              "adversarial": {k: v for k, v in asdict(AdversarialConfig(**adversarial)).items() if k != "lam"},
              "test_accuracy": {f"lambda={lam}": row for lam, row in table.items()}}
    result = journal.finish(args.out, result)  # atomic: a kill leaves the old file
    for lam, row in table.items():
        print(f"λ={lam}: test accuracy {row['mean']:.4f} ± {row['std']:.4f}  {row['test']}")
    return result


if __name__ == "__main__":
    main()
