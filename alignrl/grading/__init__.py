"""The math answer grader shared by RL rewards and evaluation (no torch, no transformers).

``grade(output, gold)`` extracts the answer from a model output, normalises it, decides easy cases in-process
and sends the rest to math-verify in worker processes with a hard per-answer timeout. Batches:
``GraderPool(num_workers=2).grade_many([(output, gold), ...])``.
"""

from alignrl.grading.config import DEFAULT_EXTRACTORS, REASONS, GraderConfig, Verdict
from alignrl.grading.extract import EXTRACTORS, extract_answer
from alignrl.grading.grader import grade, grade_local, prepare
from alignrl.grading.normalize import as_number, normalize
from alignrl.grading.pool import GraderPool, GraderWorkerError, shared_pool

__all__ = [
    "DEFAULT_EXTRACTORS", "EXTRACTORS", "REASONS", "GraderConfig", "GraderPool", "GraderWorkerError", "Verdict",
    "as_number", "extract_answer", "grade", "grade_local", "normalize", "prepare", "shared_pool",
]
