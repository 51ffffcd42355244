"""The one definition of SPRINT's trajectory format: tags, records, parsing, rendering and token metrics.

Training data, inference prompts, evaluation and reports all use this package, so the bytes a model is trained on
are the bytes it sees when it runs.
"""

from sprint.format import tags
from sprint.format.metrics import (
    HFTokenCounter,
    StageCost,
    TokenCounter,
    TrajectoryMetrics,
    load_token_counter,
    sequential_metrics,
    trajectory_metrics,
    whitespace_counter,
)
from sprint.format.parse import TrajectoryParseError, parse, parse_plan
from sprint.format.sequential import SequentialTrace, parse_sequential, render_sequential, render_sequential_body
from sprint.format.tags import executor_stop_strings, planner_stop_strings
from sprint.format.trajectory import (
    Diagnostic,
    Execution,
    Plan,
    Prompt,
    Stage,
    Trajectory,
    render,
    render_body,
    render_execution,
    render_execution_block,
    render_final_answer,
    render_plan,
    render_plan_body,
    render_prompt,
    render_question,
    render_stage,
)

__all__ = [
    "Diagnostic", "Execution", "HFTokenCounter", "Plan", "Prompt", "SequentialTrace", "Stage", "StageCost",
    "TokenCounter", "Trajectory", "TrajectoryMetrics", "TrajectoryParseError", "executor_stop_strings",
    "load_token_counter", "parse", "parse_plan", "parse_sequential", "planner_stop_strings", "render", "render_body",
    "render_execution", "render_execution_block", "render_final_answer", "render_plan", "render_plan_body",
    "render_prompt", "render_question", "render_sequential", "render_sequential_body", "render_stage",
    "sequential_metrics", "tags", "trajectory_metrics", "whitespace_counter",
]
