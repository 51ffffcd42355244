"""Synthetic reasoning tasks with exact verifiers, built for training and evaluating small SPRINT models.

* `sprint.tasks.countdown`: the Countdown numbers game (problems, verifier, solver, search traces, data sets).
"""
