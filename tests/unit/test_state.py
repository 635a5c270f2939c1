"""The remembered ip-ranges state: the file store (CLI), the DynamoDB store (deployed) and the state document."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from eic_guard.ranges import ip_ranges
from eic_guard.ranges.state import STATE_ITEM_ID, DynamoDbStateStore, FileStateStore, RangesState, StateConflict

from tests.conftest import EIC_US_EAST_1, EIC_US_EAST_1_V6, IP_RANGES, REGION, create_state_table

SEEN = datetime(2026, 8, 22, 16, 0, tzinfo=UTC)
TABLE = "eic-guard-state"


def state_at(sync_token: str, **changes) -> RangesState:
    values = {
        "sync_token": sync_token,
        "create_date": "2026-08-22-15-17-05",
        "md5": "63431d35877fa5386ded1a7df9cfa971",
        "current": {REGION: [EIC_US_EAST_1, EIC_US_EAST_1_V6]},
        "last_seen": {REGION: {EIC_US_EAST_1: SEEN, EIC_US_EAST_1_V6: SEEN, "198.51.100.24/29": SEEN}},
        "updated_at": SEEN,
    }
    return RangesState(**{**values, **changes})


# ---- RangesState --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stored", "incoming", "newer"),
    [
        ("999", "1000", True),  # numeric, not text: "999" > "1000" as strings
        ("1000", "999", False),
        ("1787411825", "1787411825", False),
        ("1780065426", "1787411825", True),
        ("1787411825", "1512067332", False),
        (None, "1", True),
    ],
)
def test_is_newer_compares_synctokens_as_numbers(stored, incoming, newer):
    # Given a state remembering `stored`, When asked about `incoming`, Then the answer is numeric
    assert RangesState(sync_token=stored).is_newer(incoming) is newer


def test_as_ip_ranges_is_none_without_a_file():
    # Given the empty state, Then there is nothing to reuse
    assert RangesState().as_ip_ranges() is None


def test_as_ip_ranges_gives_back_the_remembered_prefixes():
    # Given the state written after applying 2026-08-22 for us-east-1
    state = state_at("1787411825")

    # When it is turned back into IpRanges
    ranges = state.as_ip_ranges()

    # Then its identity and us-east-1's prefixes are those of the real file, split by family
    real = ip_ranges.load(str(IP_RANGES / "ip-ranges-2026-08-22.json"), "63431d35877fa5386ded1a7df9cfa971")
    assert (ranges.sync_token, ranges.create_date, ranges.md5) == (real.sync_token, real.create_date, real.md5)
    assert ranges.for_region(REGION) == real.for_region(REGION)
    assert ranges.for_region(REGION).ipv4 == (ipaddress.ip_network(EIC_US_EAST_1),)
    assert ranges.for_region(REGION).ipv6 == (ipaddress.ip_network(EIC_US_EAST_1_V6),)
    assert ranges.for_region("eu-west-1").all == ()  # not remembered: nothing, not someone else's


# ---- FileStateStore -----------------------------------------------------------------------------------------------
def test_file_store_without_a_file_is_empty(tmp_path):
    # Given no state file, When loaded, Then the state is empty
    assert FileStateStore(tmp_path / "missing" / "state.json").load() == RangesState()


def test_file_store_round_trip(tmp_path):
    # Given a state with aware datetimes and a store in a directory that does not exist yet
    store = FileStateStore(tmp_path / "dir" / "state.json")
    state = state_at("1787411825")

    # When it is saved as the first state, then loaded by another store on the same path
    store.save(state, None)
    loaded = FileStateStore(tmp_path / "dir" / "state.json").load()

    # Then everything comes back equal, with no temporary file left behind
    assert loaded == state
    assert loaded.last_seen[REGION][EIC_US_EAST_1] == SEEN and loaded.last_seen[REGION][EIC_US_EAST_1].tzinfo
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["state.json"]


def test_file_store_advances_from_the_previous_token(tmp_path):
    # Given a saved state at 1780298824
    store = FileStateStore(tmp_path / "state.json")
    store.save(state_at("1780298824"), None)

    # When a newer state is saved naming that token as the previous one
    store.save(state_at("1787411825"), "1780298824")

    # Then the file holds the newer state
    assert store.load().sync_token == "1787411825"


def test_file_store_conflict_when_the_file_changed_under_us(tmp_path):
    # Given two runs that both read the state at 1780298824
    path = tmp_path / "state.json"
    FileStateStore(path).save(state_at("1780298824"), None)
    ours, theirs = FileStateStore(path), FileStateStore(path)
    previous = ours.load().sync_token

    # When the other run saves first, and ours then saves from the token it read
    theirs.save(state_at("1787411825", md5="theirs"), previous)
    with pytest.raises(StateConflict):
        ours.save(state_at("1787411825", md5="ours"), previous)

    # Then the other run's state is kept intact
    assert FileStateStore(path).load().md5 == "theirs"


def test_file_store_conflict_when_someone_created_the_file(tmp_path):
    # Given a run that found no state, and another run that writes one meanwhile
    path = tmp_path / "state.json"
    FileStateStore(path).save(state_at("1780298824"), None)

    # When the first run saves as if it were the first, Then it conflicts
    with pytest.raises(StateConflict):
        FileStateStore(path).save(state_at("1787411825"), None)
    assert FileStateStore(path).load().sync_token == "1780298824"


# ---- DynamoDbStateStore -------------------------------------------------------------------------------------------
@pytest.fixture
def dynamodb(aws):
    return create_state_table(TABLE)


def test_dynamodb_store_is_empty_before_the_first_save(dynamodb):
    assert DynamoDbStateStore(dynamodb, TABLE).load() == RangesState()


def test_dynamodb_store_conditional_writes(dynamodb):
    # Given an empty table
    store = DynamoDbStateStore(dynamodb, TABLE)

    # When the first state is saved with no previous token, then a newer one with the right previous token
    store.save(state_at("1780298824"), None)
    first = store.load()
    store.save(state_at("1787411825"), "1780298824")

    # Then each load returns what was saved last, in one item keyed by the state id
    assert first == state_at("1780298824")
    assert store.load() == state_at("1787411825")
    items = dynamodb.scan(TableName=TABLE)["Items"]
    assert [(i["id"]["S"], i["sync_token"]["S"]) for i in items] == [(STATE_ITEM_ID, "1787411825")]


@pytest.mark.parametrize("previous", [None, "1780298824", "999"])
def test_dynamodb_store_refuses_a_save_from_a_wrong_previous_token(dynamodb, previous):
    # Given the table at 1787411825
    store = DynamoDbStateStore(dynamodb, TABLE)
    store.save(state_at("1780298824"), None)
    store.save(state_at("1787411825"), "1780298824")

    # When a run that read an older (or no) state saves, Then it conflicts and the stored state is unchanged
    with pytest.raises(StateConflict):
        store.save(state_at("1790000000"), previous)
    assert store.load() == state_at("1787411825")


# ---- a corrupt item: read as no state, replaced (only it) at the next save -------------------------------------------
def put_document(dynamodb, document: str | None, sync_token: str = "1780298824") -> None:
    item = {"id": {"S": STATE_ITEM_ID}, "sync_token": {"S": sync_token}}
    if document is not None:
        item["document"] = {"S": document}
    dynamodb.put_item(TableName=TABLE, Item=item)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('{"sync_token": "1780298824", "current": {"us-east-1": ["1.2.3.4/33"]}}', "current: '1.2.3.4/33' is not a"),
        ('{"sync_token": "1780298824", "current": {"us-east-1": ["10.0.0.1/24"]}}', "current: '10.0.0.1/24' is not a"),
        ('{"current": {}, "absent_since": {"us-east-1": {"x": "2026-08-22T00:00:00Z"}}}', "absent_since: 'x' is not"),
        ('{"sync_token": "1780298824x"}', "sync_token: '1780298824x' is not a number"),
        ('{"sync_token": "178', "Invalid JSON: EOF while parsing a string"),
        ("[1, 2]", "Input should be an object"),
        (None, "the item has no document"),
    ],
    ids=["cidr-out-of-range", "host-bits-set", "bad-clock-prefix", "bad-token", "truncated", "array", "no-document"],
)
def test_dynamodb_store_reads_a_corrupt_item_as_no_state_marked_with_what_is_wrong(dynamodb, document, reason):
    # Given a state item that is not a valid state
    put_document(dynamodb, document)

    # When it is loaded
    state = DynamoDbStateStore(dynamodb, TABLE).load()

    # Then it is an empty state (nothing in it is trusted) that says what was wrong
    assert state.model_dump() == RangesState().model_dump()
    assert state.corrupt is not None and state.corrupt.reason.startswith(reason), state.corrupt
    assert state.corrupt.document == document
    assert state.as_ip_ranges() is None


def test_the_next_save_replaces_the_corrupt_item_and_the_state_is_valid_again(dynamodb):
    # Given a corrupt item, loaded
    put_document(dynamodb, '{"sync_token": "1780298824", "current": {"us-east-1": ["1.2.3.4/33"]}}')
    store = DynamoDbStateStore(dynamodb, TABLE)
    state = store.load()

    # When the rebuilt state is saved (as a run that read no state would: no previous token)
    rebuilt = state_at("1787411825")
    for field in ("sync_token", "create_date", "md5", "current", "last_seen", "updated_at"):
        setattr(state, field, getattr(rebuilt, field))
    store.save(state, None)

    # Then the item holds it, no longer corrupt, and the next save follows the ordinary conditions
    assert state.corrupt is None
    again = store.load()
    assert again.corrupt is None and again == rebuilt
    with pytest.raises(StateConflict):
        store.save(state_at("1790000000"), "1780298824")


def test_a_corrupt_item_repaired_meanwhile_by_another_run_is_not_overwritten(dynamodb):
    # Given two runs that read the same corrupt item; the first rebuilds it
    put_document(dynamodb, "not json")
    store = DynamoDbStateStore(dynamodb, TABLE)
    first, second = store.load(), store.load()
    first.sync_token = "1787411825"
    store.save(first, None)

    # When the second saves its own rebuild, Then it conflicts and the first's state stays
    second.sync_token = "1780298824"
    with pytest.raises(StateConflict):
        store.save(second, None)
    assert store.load().sync_token == "1787411825"


def test_an_empty_state_saved_can_be_followed_by_a_first_file(dynamodb):
    # Given an item that holds no file yet (a corrupt item reset in report mode)
    put_document(dynamodb, "{}", sync_token="")
    store = DynamoDbStateStore(dynamodb, TABLE)

    # When the first file is saved with no previous token, Then it is stored
    store.save(state_at("1787411825"), None)
    assert store.load().sync_token == "1787411825"
