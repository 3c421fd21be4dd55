"""Run configuration: the ``RunConfig`` sections, YAML ``base:`` chains, dotted overrides, and the
checks that name the offending key (``run_config``)."""
