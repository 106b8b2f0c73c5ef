"""The ablation wing (lesson 6): the paper's Table 4 at a scale that fits, imported by nothing but lessons.

reproduce: plan (scales, the FLOP model) → run (jobs, budget, workers) → report (tables, verdicts, figures).
"""
