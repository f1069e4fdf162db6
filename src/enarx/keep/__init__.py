"""The agent inside a Keep: sets up the workload's files, (later) attests, and runs it."""
