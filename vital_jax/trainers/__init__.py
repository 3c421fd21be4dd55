"""Trainers: host batches → the jitted, sharded step (``batch``, ``step``, ``optim``), the step loop
both trainers share (``loop``), SFT (``sft``) and RL with the tool loop (``rl``), multi-host
start-up (``distributed``), ``vital train``."""
