"""Evaluation: answer grading (`sprint.eval.grading`) and trajectory analysis (`sprint.eval.analyze`)."""

from sprint.eval.grading import Accuracy, GradeResult, accuracy, extract_answer, grade, is_equiv, is_equiv_async

__all__ = ["Accuracy", "GradeResult", "accuracy", "extract_answer", "grade", "is_equiv", "is_equiv_async"]
