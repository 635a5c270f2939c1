"""Talking to AWS: clients and credentials per account, the inventory (gather) and the gateway (act)."""
