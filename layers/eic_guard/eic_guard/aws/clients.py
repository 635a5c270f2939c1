"""AWS clients with botocore's standard retry mode; nothing talks to AWS at import time."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER, ResponseParserFactory

from ..budget import Deadline
from ..errors import ConfigurationError
from .retries import ThrottleRetries

# One call that hangs costs at most MAX_ATTEMPTS x (CONNECT_TIMEOUT + READ_TIMEOUT) plus backoff (about 2 min),
# not 8 x 60 s; a Deadline (budget.py) refuses further attempts once the invocation's reserve is reached. A throttled
# call is the exception: with a deadline it is retried while the deadline leaves time (retries.ThrottleRetries).
# READ_TIMEOUT leaves room for a DescribeInstances page of 1,000 instances.
# What AWS answers a role that may not make a call (EC2 says UnauthorizedOperation, most services AccessDenied).
PERMISSION_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
MAX_ATTEMPTS = 4
RETRY_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},  # the first try included
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    max_pool_connections=50,  # one client is shared by the CLI's target threads and Aggregate's readers
    user_agent_extra="eic-guard",
)


# A response body at least this large is parsed while no other large one is (one at a time in the process).
LARGE_RESPONSE_BYTES = 1 << 20


class CallLog(Protocol):
    def attach(self, client: Any, account: Callable[[], str | None]) -> None:
        """Follow every call `client` makes, in the account `account()` names once it is known."""


class AwsClients:
    """Builds one client per (service, region) from a session; honours AWS_ENDPOINT_URL via boto3.

    With a `deadline`, every client refuses to send a request once the invocation's reserve is reached. With a
    `call_log` (the CLI's -v), every client reports each call it makes to it.
    """

    def __init__(
        self,
        session: boto3.Session | None = None,
        config: Config = RETRY_CONFIG,
        deadline: Deadline | None = None,
        account: str | None = None,
        call_log: CallLog | None = None,
    ):
        self.session = session or boto3.Session()
        # Every response's timestamps parsed by the standard library, not dateutil (botocore's default): a fifth of a
        # 5,000-instance scan's CPU went into parsing LaunchTime and AttachTime, which nothing reads. Same values.
        # And large responses parsed one at a time (OneLargeParseAtATime). Set before any client of the session is
        # built: a client keeps the factory it was built with.
        botocore_session = self.session._session
        parsers = botocore_session.get_component("response_parser_factory")
        if not isinstance(parsers, OneLargeParseAtATime):
            parsers = OneLargeParseAtATime(parsers)
            botocore_session.register_component("response_parser_factory", parsers)
        parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
        self.config = config
        self.deadline = deadline
        self.call_log = call_log
        self._account = account  # known when the credentials came from assuming a role in that account
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._alias: tuple[str | None] | None = None  # (alias,) once asked
        self._alias_lock = threading.Lock()
        self._throttle_retries = ThrottleRetries(lambda: self.deadline)

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region)
        if key not in self._clients:
            client = self.session.client(service, region_name=region, config=self.config)
            # Every attempt of every call checks the deadline in force at that moment (a warm Lambda container
            # reuses these clients across invocations, each with its own deadline).
            client.meta.events.register("before-send", self._check_deadline)
            # A thread about to wait for an answer lets another parse its large one (OneLargeParseAtATime).
            client.meta.events.register("before-send", OneLargeParseAtATime.give_turn_back)
            # Throttling is retried while the deadline leaves time (retries.py), ahead of the standard mode's handler.
            service = client.meta.service_model.service_id.hyphenize()
            client.meta.events.register_first(f"needs-retry.{service}", self._throttle_retries)
            if self.call_log is not None:
                self.call_log.attach(client, lambda: self._account)
            self._clients[key] = client
        return self._clients[key]

    def _check_deadline(self, event_name: str = "", **_: Any) -> None:
        if self.deadline is not None:
            self.deadline.check(event_name.rsplit(".", 1)[-1] or "AWS call")

    def ec2(self, region: str) -> Any:
        return self.client("ec2", region)

    def account_id(self) -> str:
        """The caller's account (GetCallerIdentity needs no IAM permission), asked once per AwsClients."""
        if self._account is None:
            self._account = self._caller_account()
        return self._account

    def account_alias(self) -> str | None:
        """The account's IAM alias, asked once per AwsClients (a run, or a warm container's run); None when the
        account has none or the role may not read it (iam:ListAccountAliases): names are a courtesy, never a
        reason to fail a target."""
        with self._alias_lock:
            if self._alias is None:
                try:
                    aliases = self.client("iam").list_account_aliases().get("AccountAliases", [])
                    self._alias = (aliases[0] if aliases else None,)
                except (ClientError, BotoCoreError) as exc:
                    from ..observability import logger  # late: observability imports Powertools

                    logger.info("account alias not read", extra={"error": str(exc)})
                    if not _refused(exc):
                        return None  # throttled or out of time: a later target of the run asks again
                    self._alias = (None,)
            return self._alias[0]

    def _caller_account(self) -> str:
        try:
            return self.client("sts", self.session.region_name or "us-east-1").get_caller_identity()["Account"]
        except NoCredentialsError:
            raise ConfigurationError("no AWS credentials found (set AWS_PROFILE or the AWS_* variables)") from None
        except (ClientError, BotoCoreError) as exc:
            raise ConfigurationError(f"cannot identify the AWS account: {exc}") from None


class OneLargeParseAtATime(ResponseParserFactory):
    """botocore's parser factory, whose parsers take a large answer (a DescribeInstances page of thousands of
    instances) only in the process's turn for large answers, and parse it with the cyclic collector paused.

    *The turn.* Parsing is Python under the GIL: two threads parsing at once take as long as one after the other but
    hold both answers' XML trees, and a scan of two regions (the CLI's threads) peaked at the sum of its two largest
    answers. A thread takes the turn to parse a large answer and gives it back when the parse is done, or, inside
    `reading_large_answers()` (the inventory's DescribeInstances pages), when it sends its next request or leaves the
    block: by then it has made its compact records of the page and let the page go. Requests, network waits and
    small answers stay concurrent.

    *The collector.* An answer's parse makes no reference cycle (its tree and dictionaries are freed by reference
    counting), but the collections its hundreds of thousands of allocations set off walk the whole heap: at 5,000
    instances a third of the parse's CPU. They find nothing, so the collector is paused while a large answer is
    parsed (and left as it was if someone else paused it). docs/architecture.md §15."""

    _turn = threading.Lock()  # one for the process: the memory it bounds is the process's
    _thread = threading.local()  # .holds: this thread has the turn; .reading: inside reading_large_answers()

    def __init__(self, wrapped: ResponseParserFactory | None = None):
        super().__init__()
        self._defaults.update(getattr(wrapped, "_defaults", {}))

    def create_parser(self, protocol_name: str) -> Any:
        return _TurnTakingParser(super().create_parser(protocol_name))

    @classmethod
    def parse_in_turn(cls, parse: Callable[[], Any]) -> Any:
        if not getattr(cls._thread, "holds", False):
            cls._turn.acquire()
            cls._thread.holds = True
        try:
            paused = gc.isenabled()
            if paused:
                gc.disable()
            try:
                return parse()
            finally:
                if paused:
                    gc.enable()
        finally:
            if not getattr(cls._thread, "reading", False):
                cls.give_turn_back()

    @classmethod
    def give_turn_back(cls, **_: Any) -> None:
        """The thread's turn back, if it has it (also a botocore before-send handler: a request about to wait)."""
        if getattr(cls._thread, "holds", False):
            cls._thread.holds = False
            cls._turn.release()

    @classmethod
    @contextmanager
    def reading_large_answers(cls) -> Iterator[None]:
        """Within: a large answer's turn lasts until the thread's next request or the block's end."""
        outer = getattr(cls._thread, "reading", False)
        cls._thread.reading = True
        try:
            yield
        finally:
            cls._thread.reading = outer
            if not outer:
                cls.give_turn_back()


class _TurnTakingParser:
    def __init__(self, parser: Any):
        self._parser = parser

    def parse(self, response: dict, shape: Any) -> Any:
        body = response.get("body")
        if not isinstance(body, bytes | bytearray) or len(body) < LARGE_RESPONSE_BYTES:
            return self._parser.parse(response, shape)
        return OneLargeParseAtATime.parse_in_turn(lambda: self._parser.parse(response, shape))

    def __getattr__(self, name: str) -> Any:  # anything else botocore asks of a parser
        return getattr(self._parser, name)


def parse_timestamp(value: Any) -> Any:
    """A response timestamp as botocore's default parser returns it (an aware datetime): ISO 8601 with a zone, which
    every EC2 and STS answer uses, by `datetime.fromisoformat`; anything else (epoch seconds...) by botocore's."""
    if isinstance(value, str) and value[4:5] == "-":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return DEFAULT_TIMESTAMP_PARSER(value)


def _refused(exc: Exception) -> bool:
    """An answer that will not change during the run (the role may not read it), unlike throttling or a timeout."""
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return code in PERMISSION_DENIED


_LAMBDA_CLIENTS: AwsClients | None = None


def lambda_clients(deadline: Deadline) -> AwsClients:
    """The Lambda container's clients, built on its first invocation and reused by the next ones (building a
    session and its clients costs ~0.2 s of CPU), each invocation with its own deadline."""
    global _LAMBDA_CLIENTS
    if _LAMBDA_CLIENTS is None:
        _LAMBDA_CLIENTS = AwsClients()
    _LAMBDA_CLIENTS.deadline = deadline
    return _LAMBDA_CLIENTS


def known_regions(session: boto3.Session) -> set[str]:
    """Every region botocore knows for EC2, across partitions."""
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return regions
