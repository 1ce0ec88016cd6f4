"""Where measurements go: JSONL log (more exporters arrive with later issues)."""

from meter.exporters.jsonl import JsonlWriter, read_jsonl

__all__ = ["JsonlWriter", "read_jsonl"]
