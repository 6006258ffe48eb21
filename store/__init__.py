"""Request log tap storage: usage records and statistics, request log files, the application
log ring and Prometheus metrics.

The request log and application log writers redact secrets through `store.redact`. Usage
records carry key labels, never keys, so the usage store needs no redaction.
"""
