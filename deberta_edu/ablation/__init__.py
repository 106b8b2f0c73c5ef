"""The ablation wing (lesson 6): the paper's Table 4 at a scale that fits, imported by nothing but lessons.

plan (scales, the v1/v3 layout, every run's config and FLOP budget, the grid and the seeds) → jobs (one run:
pretrain, evaluate, probe, fine-tune; one JSON file each, written as it ends) with metrics (the probes, the
sentiment fine-tuning, the baselines) and timing (the smoke check, a budget fitted to measured step times) →
run (the whole reproduction, resumable) → report (tables, paired tests via stats) → markdown and plots.
reproduce is the command line, ``python -m deberta_edu.reproduce``. FLOPs per token come from ``training.flops``.
"""
