"""Operator tools: the `babylon` command, the Dagster instance it writes, its run launchers and workers."""
