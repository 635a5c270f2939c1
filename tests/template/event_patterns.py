"""A small EventBridge event-pattern matcher for the operators the templates' rules use (EventBridge's own, Event
Ruler, is Java): exact values, exists, equals-ignore-case, anything-but, suffix, nested objects, arrays of objects and
$or. An operator it does not model fails the test that meets it, rather than matching silently."""

from __future__ import annotations


def matches(pattern: dict, event: dict) -> bool:
    """EventBridge's matching for what the rules use: every pattern field must be in the event; a list of values
    matches when one of them does (an exact value, {"exists": ...}, {"equals-ignore-case": ...}, {"anything-but":
    [...]}, {"suffix": ...}); a nested object matches the event's object, or any object of the event's array of
    objects; an array of scalars in the event matches when any element does; "$or" holds when one of its patterns
    does."""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches(option, event) for option in expected):
                return False
            continue
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(expected, dict):
            if not present:
                return False
            candidates = value if isinstance(value, list) else [value]
            if not any(isinstance(c, dict) and matches(expected, c) for c in candidates):
                return False
            continue
        if not _matches_values(expected, present, value):
            return False
    return True


def _matches_values(expected: list, present: bool, value) -> bool:
    values = value if isinstance(value, list) else [value]
    for option in expected:
        if isinstance(option, dict):
            [(operator, operand)] = option.items()
            if operator == "exists":
                if operand is present and (not present or not isinstance(value, dict)):
                    return True
            elif operator == "equals-ignore-case":
                if present and any(str(v).lower() == operand.lower() for v in values):
                    return True
            elif operator == "anything-but":
                if present and any(v not in operand for v in values):
                    return True
            elif operator == "suffix":
                if present and any(str(v).endswith(operand) for v in values):
                    return True
            else:
                raise AssertionError(f"operator not modelled by this matcher: {option}")
        elif present and option in values:
            return True
    return False
