"""Event-driven checks (docs/architecture.md §10): EC2 state changes and CloudTrail API calls → the affected opted-in
instances, checked and fixed by the same engine, mode and safety rules as the nightly run, one scan per (account,
region)."""

from .check import ON_CHANGE_RESERVE, ChangeBatch, RecordFailed, check_changes

__all__ = ["ON_CHANGE_RESERVE", "ChangeBatch", "RecordFailed", "check_changes"]
