"""Organization scale (docs/architecture.md §9): plan (account, region) targets, run a worker per target, aggregate one
report.

The same three steps run deployed (Step Functions: Plan → Distributed Map of the target worker → Aggregate) and
locally (the CLI's bounded thread pool), so there is one engine.
"""
