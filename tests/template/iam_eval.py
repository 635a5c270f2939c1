"""A small IAM policy evaluator for identity policies: is one request allowed by a role's statements?

It follows IAM's documented evaluation for a single identity-based policy set: an explicit Deny that matches wins;
otherwise some Allow must match; otherwise the request is implicitly denied. A statement matches when its action,
its resource and every condition match. What it does not model (and the tests do not claim): service control
policies, permission boundaries, session policies, resource-based policies (bucket, topic and key policies), and
policy variables in values other than a global condition key the request carries (${aws:PrincipalOrgID}: replaced by
its value; absent, the test cannot hold).

Request context values are strings, or tuples of strings for multi-valued keys (aws:TagKeys).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

ContextValue = str | tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One authorization IAM makes: an action on one resource ARN ("*" when the action names none)."""

    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "allowed by <Sid>", "explicitly denied by <Sid>" or "implicitly denied"


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _sid(statement: Mapping) -> str:
    return statement.get("Sid", "(no Sid)")


# ---------------------------------------------------------------- action and resource


def _action_matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())  # action names are case-insensitive


def _resource_matches(pattern: str, arn: str) -> bool:
    """ARN match with * and ? wildcards; a wildcard never spans the colon-separated ARN fields."""
    if pattern == "*":
        return True
    if arn == "*":
        return False
    wanted, actual = pattern.split(":", 5), arn.split(":", 5)
    return len(wanted) == len(actual) == 6 and all(map(fnmatch.fnmatchcase, actual, wanted))


def _statement_applies(statement: Mapping, request: Request) -> bool:
    if "Action" in statement:
        if not any(_action_matches(p, request.action) for p in _as_list(statement["Action"])):
            return False
    elif any(_action_matches(p, request.action) for p in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_resource_matches(p, request.resource) for p in _as_list(statement["Resource"])):
            return False
    elif any(_resource_matches(p, request.resource) for p in _as_list(statement["NotResource"])):
        return False
    return conditions_match(statement.get("Condition", {}), request.context)


# ---------------------------------------------------------------- conditions


def _string_equals(actual: str, wanted: str) -> bool:
    return actual == wanted


def _string_equals_ignore_case(actual: str, wanted: str) -> bool:
    return actual.lower() == wanted.lower()


def _string_like(actual: str, wanted: str) -> bool:
    return fnmatch.fnmatchcase(actual, wanted)


def _arn_like(actual: str, wanted: str) -> bool:
    return _resource_matches(wanted, actual)


def _bool(actual: str, wanted: str) -> bool:
    return actual.lower() == str(wanted).lower()


# operator -> (value comparison, negated)
OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ignore_case, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ignore_case, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
    "Bool": (_bool, False),
}


def _value_matches(compare: Callable[[str, str], bool], negated: bool, actual: str, wanted: Sequence[str]) -> bool:
    """One request value against the policy's values: any of them (or, negated, none of them)."""
    hit = any(compare(actual, str(w)) for w in wanted)
    return not hit if negated else hit


POLICY_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(value: str, context: Mapping[str, ContextValue]) -> str | None:
    """A value with its policy variables (${aws:PrincipalOrgID}) replaced by the request's; None when one is absent."""
    missing = [name for name in POLICY_VARIABLE.findall(value) if not isinstance(context.get(name), str)]
    if missing:
        return None
    return POLICY_VARIABLE.sub(lambda m: str(context[m.group(1)]), value)


def _key_matches(operator: str, key: str, wanted, context: Mapping[str, ContextValue]) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    wanted = [v for v in (_substitute(str(w), context) for w in _as_list(wanted)) if v is not None]
    present = key in context
    if base == "Null":
        return present != (wanted[0].lower() == "true")
    if base not in OPERATORS:
        raise ValueError(f"condition operator {operator} is not modelled")
    compare, negated = OPERATORS[base]
    values = context.get(key)
    values = tuple(values) if isinstance(values, tuple) else ((values,) if present else ())
    if qualifier == "ForAllValues":
        return all(_value_matches(compare, negated, v, wanted) for v in values)  # true when there is none
    if qualifier == "ForAnyValue":
        return any(_value_matches(compare, negated, v, wanted) for v in values)
    if qualifier:
        raise ValueError(f"condition qualifier {qualifier} is not modelled")
    if not present:
        return if_exists or negated  # a missing key fails a test, except negated and ...IfExists ones
    return any(_value_matches(compare, negated, v, wanted) for v in values)


def conditions_match(condition: Mapping, context: Mapping[str, ContextValue]) -> bool:
    """Every operator, every key under it (AND); any value of a key (OR)."""
    return all(
        _key_matches(operator, key, wanted, context)
        for operator, keys in condition.items()
        for key, wanted in keys.items()
    )


# ---------------------------------------------------------------- decision


def evaluate(statements: Sequence[Mapping], request: Request) -> Decision:
    """Whether the statements allow the request: an explicit Deny wins, else an Allow is needed."""
    applying = [s for s in statements if _statement_applies(s, request)]
    denies = [s for s in applying if s["Effect"] == "Deny"]
    if denies:
        return Decision(False, f"explicitly denied by {_sid(denies[0])}")
    allows = [s for s in applying if s["Effect"] == "Allow"]
    if allows:
        return Decision(True, f"allowed by {_sid(allows[0])}")
    return Decision(False, "implicitly denied")
