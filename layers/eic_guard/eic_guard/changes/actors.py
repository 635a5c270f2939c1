"""Loop prevention: a change made by eic-guard itself (its fixes, its status tags) is never checked again.

eic-guard acts through its own roles (their ARNs: setting EIC_GUARD_OWN_ROLE_ARNS, a comma list the template fills
in) and, in member accounts, through the member role with the session name `eic-guard-<run id>`
(aws.credentials.session_name). CloudTrail names the caller in `userIdentity.arn` (for a role session
`arn:<partition>:sts::<account>:assumed-role/<role name>/<session>`) and the role in
`userIdentity.sessionContext.sessionIssuer.arn` (`arn:<partition>:iam::<account>:role/<path><role name>`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from ..errors import ConfigurationError
from ..settings import ENV_PREFIX
from .events import Actor

OWN_ROLE_ARNS_ENV = f"{ENV_PREFIX}OWN_ROLE_ARNS"
_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/(?:[\w+=,.@-]+/)*(?P<name>[\w+=,.@-]{1,64})$"
)
_SESSION_PREFIX = "eic-guard-"


class OwnRoles:
    """eic-guard's own identities: the central roles by ARN, the member role by name with eic-guard's sessions."""

    def __init__(self, role_arns: Iterable[str], member_role_name: str):
        self.role_arns = frozenset(role_arns)
        bad = sorted(a for a in self.role_arns if not _ROLE_ARN.match(a))
        if bad:
            raise ConfigurationError(f"{OWN_ROLE_ARNS_ENV}: not an IAM role ARN: {', '.join(bad)}")
        self._sessions = tuple(
            f"arn:{m['partition']}:sts::{m['account']}:assumed-role/{m['name']}/"
            for m in (_ROLE_ARN.match(a) for a in sorted(self.role_arns))
        )
        self._member_session = re.compile(
            rf"^arn:aws[a-z-]*:sts::\d{{12}}:assumed-role/{re.escape(member_role_name)}/{_SESSION_PREFIX}"
        )

    @classmethod
    def from_env(cls, member_role_name: str, env: Mapping[str, str] | None = None) -> OwnRoles:
        env = os.environ if env is None else env
        arns = [a.strip() for a in env.get(OWN_ROLE_ARNS_ENV, "").split(",") if a.strip()]
        return cls(arns, member_role_name)

    def made(self, actor: Actor) -> bool:
        """True when `actor` is one of eic-guard's own roles or an eic-guard session of the member role."""
        if actor.issuer_arn in self.role_arns or actor.arn in self.role_arns:
            return True
        arn = actor.arn or ""
        return arn.startswith(self._sessions) or bool(self._member_session.match(arn))
