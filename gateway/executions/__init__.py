"""Executions: submit code, read a job's result, follow its events, the runners' backlog (``/execution``)."""
