"""Whole-pipeline applications: ``vital demo`` (synth → SFT → RL → eval → report) and ``vital plan``
(the memory planner)."""
