"""Which pretrained model the lessons show: the committed course model, or a better one the learner trained.

Lessons 2 and 5, the attention explorer and the book use the course model (results/course-model/, trained
once by the recipe of ``get_config("course")``). Lesson 3 always loads the course model itself: what it measures
depends on that model's 128-token rows. A learner who has run lesson 4 at full size has a local model of
their own; it is used instead only when its last held-out accuracy beats the course model's, and only when
the two numbers were scored alike (``scored_alike``: the same held-out corpus, vocabulary size, row length
and masking). A smoke-size run (``name`` other than "lesson4" in its train_config.json) is never used,
whatever it scored.
"""

from __future__ import annotations

from pathlib import Path

from deberta_edu.facts import LOG_FILE, MODEL_FILE, TOKENIZER_FILE
from deberta_edu.model.checkpoint import lesson_checkpoint, load_pretrained, run_config
from deberta_edu.training.course import COURSE_DIR, course_label, course_metrics

FULL_SIZE_RUN = "lesson4"  # the name a full-size lesson 4 run writes in its train_config.json


def local_run_accuracy(folder: str | Path) -> tuple[float, int] | None:
    """(last held-out accuracy, tokens) of a full-size lesson 4 run in ``folder``; None for anything else."""
    from deberta_edu.training.state import read_jsonl

    folder = Path(folder)
    if not (run_config(folder).get("name") == FULL_SIZE_RUN and (folder / MODEL_FILE).exists()
            and (folder / TOKENIZER_FILE).exists()):
        return None
    try:
        records = read_jsonl(folder / LOG_FILE)  # drops a last line cut by a crash
    except (OSError, ValueError):
        return None
    evals = [r for r in records if isinstance(r, dict) and r.get("kind") == "eval" and "val_accuracy" in r]
    return (float(evals[-1]["val_accuracy"]), int(evals[-1].get("tokens", 0))) if evals else None


# What a held-out masked-token accuracy depends on besides the model: a smaller vocabulary, shorter rows or
# other masking give another number for the same skill, so only runs alike in these are compared
SCORING = ("vocab_size", "seq_length", "mlm_probability", "whole_word_masking")


def scored_alike(run: dict, course: dict) -> bool:
    """Whether two train_config.json dicts score held-out accuracy alike: same corpus held out, same SCORING.

    Each model still reads the text through its own SentencePiece tokenizer (of the same size), so the two
    accuracies are close kin, not identical measures; a run scored otherwise is never compared at all.
    """
    def held_out(cfg: dict):
        return cfg.get("eval_source") or cfg.get("source")

    return bool(run) and held_out(run) == held_out(course) and all(run.get(k) == course.get(k) for k in SCORING)


def lesson_model_folder(local: str | Path | None = None, course: str | Path | None = None) -> tuple[Path, str]:
    """(folder, label) of the model the lessons show; the label names the model, its tokens and accuracy."""
    local = Path(local) if local is not None else lesson_checkpoint(FULL_SIZE_RUN)
    course = Path(course) if course is not None else COURSE_DIR
    metrics = course_metrics(course)
    mine = local_run_accuracy(local)
    if (mine is not None and mine[0] > metrics["held_out"]["val_accuracy"]
            and scored_alike(run_config(local), run_config(course))):
        accuracy, tokens = mine
        return local, (f"your lesson 4 model ({tokens / 1e6:.1f}M tokens, held-out masked-token accuracy "
                       f"{accuracy:.1%}, above the course model's {metrics['held_out']['val_accuracy']:.1%})")
    return course, course_label(metrics)


def pretrained_for_lessons(local: str | Path | None = None, course: str | Path | None = None):
    """(DebertaForMaskedLM in eval mode, Tokenizer, label) of the model the lessons show."""
    from deberta_edu.data.tokenizer import load_tokenizer

    folder, label = lesson_model_folder(local, course)
    model = load_pretrained(folder).float().eval()
    return model, load_tokenizer(folder / TOKENIZER_FILE), label
