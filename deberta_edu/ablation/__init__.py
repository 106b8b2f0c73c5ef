"""The ablation wing (lesson 6): the paper's Table 4 at a scale that fits, imported by nothing but lessons.

plan (scales, variant configs, the time budget) → run (jobs, workers, the unigram baseline, provenance,
``run_ablation``) → report (the paper's numbers beside ours, verdicts, Markdown, figures); reproduce is
the command line, ``python -m deberta_edu.reproduce``. FLOPs per token come from ``training.flops``.
"""
