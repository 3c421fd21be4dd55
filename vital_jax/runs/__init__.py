"""What a run leaves behind: Orbax checkpoints with their settings (``checkpoint``), metrics.jsonl
+ TensorBoard + the progress bar (``metrics``), report.json/md and curves (``report``)."""
