"""Checkers for the lessons' exercises: run the learner's function on many cases against the library.

Each ``check_*`` prints "✓ … all N cases pass" and returns a ``CheckResult``, or raises AssertionError
that names the failing cases (inputs, expected, got) and, when the answer matches a known mistake,
says which one. A function that still raises NotImplementedError is reported as "not attempted yet"
without an error, so a lesson runs top to bottom before the exercises are done.

    lesson 1  check_relative_distance, check_relative_distance_matrix, check_distinct_rows, check_exact_window
    lesson 2  check_previous_token_head, check_mirror_table, check_mirror_answers, check_diagnosis
    lesson 3  check_emd, check_shift_answers, check_anchor_batch
    lesson 4  check_mask_80_10_10, check_perplexity, check_never_masked
    lesson 5  check_symmetric_kl, check_linf_step
    lesson 6  check_flops, check_verdict
"""

from ._common import CheckResult
from .lesson1 import (
    check_distinct_rows,
    check_exact_window,
    check_relative_distance,
    check_relative_distance_matrix,
)
from .lesson2 import (
    DIAGNOSES,
    MIRROR_QUESTIONS,
    check_diagnosis,
    check_mirror_answers,
    check_mirror_table,
    check_previous_token_head,
    head_scores,
    mirror_facts,
)
from .lesson3 import (
    EMD_MISTAKES,
    SHIFT_QUESTIONS,
    _emd_variant,
    anchor_task,
    check_anchor_batch,
    check_emd,
    check_shift_answers,
    shift_invariance,
)
from .lesson4 import (
    MASKING_MISTAKES,
    NEVER_MASKED_QUESTIONS,
    PERPLEXITY_MISTAKES,
    apply_80_10_10,
    check_mask_80_10_10,
    check_never_masked,
    check_perplexity,
    never_masked,
)
from .lesson5 import KL_HINTS, LINF_HINTS, check_linf_step, check_symmetric_kl, linf_step
from .lesson6 import FLOPS_MISTAKES, VERDICT_MISTAKES, check_flops, check_verdict

__all__ = [
    "CheckResult",
    "EMD_MISTAKES",
    "FLOPS_MISTAKES",
    "KL_HINTS",
    "LINF_HINTS",
    "MASKING_MISTAKES",
    "DIAGNOSES",
    "MIRROR_QUESTIONS",
    "NEVER_MASKED_QUESTIONS",
    "PERPLEXITY_MISTAKES",
    "SHIFT_QUESTIONS",
    "VERDICT_MISTAKES",
    "_emd_variant",
    "anchor_task",
    "apply_80_10_10",
    "check_anchor_batch",
    "check_diagnosis",
    "check_mirror_answers",
    "check_mirror_table",
    "check_previous_token_head",
    "head_scores",
    "mirror_facts",
    "check_distinct_rows",
    "check_emd",
    "check_exact_window",
    "check_flops",
    "check_linf_step",
    "check_mask_80_10_10",
    "check_never_masked",
    "check_perplexity",
    "check_relative_distance",
    "check_relative_distance_matrix",
    "check_shift_answers",
    "check_symmetric_kl",
    "check_verdict",
    "linf_step",
    "never_masked",
    "shift_invariance",
]
