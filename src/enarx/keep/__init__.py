"""The agent inside a Keep: sets up the workload's files and sockets, then runs it."""
