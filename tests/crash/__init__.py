"""Crash tests: the snapcore CLI killed with SIGKILL at each file operation, lock and
subprocess start of create, delete and revert, then recovered and checked."""
