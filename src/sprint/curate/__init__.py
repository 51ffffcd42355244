"""Curation: turn sequential reasoning traces into SPRINT training data (extract steps, build a DAG, pack, render)."""
