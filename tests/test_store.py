"""bridge/store/: schema, claims, the integration log, inbound de-duplication."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.store import MIGRATIONS, NotFound, Store, hash_api_key
from tests.ids import mm_id


def _log(store, **fields):
    row = {"env": "test", "direction": "outbound", "action": "post", "outcome": "ok", **fields}
    return store.log(**row)


# -- schema ---------------------------------------------------------------------


def test_migrate_is_idempotent(store):
    version = store.migrate()
    assert version == len(MIGRATIONS)
    assert store.migrate() == version
    assert store.schema_version() == version
    assert [env["name"] for env in store.environments()] == ["test", "production"]


def test_migrate_builds_a_fresh_database(tmp_path):
    store = Store(str(tmp_path / "fresh.db"))
    try:
        assert store.schema_version() == 0
        assert store.migrate() == len(MIGRATIONS)
        assert store.environment("test")["active"] is False
    finally:
        store.close()


def test_unknown_environment_is_not_found(store):
    with pytest.raises(NotFound, match="test' or 'production"):
        store.environment("staging")


def test_update_environment_keeps_other_fields_and_decodes_the_map(store):
    store.update_environment("test", server_url="https://a.example.com")
    settings = store.update_environment("test", notify_map={"order": "ch1"}, active=1)
    assert settings["server_url"] == "https://a.example.com"
    assert settings["notify_map"] == {"order": "ch1"}
    assert settings["active"] is True
    assert store.environment("production")["notify_map"] == {}


def test_api_keys_are_stored_hashed_and_looked_up(store):
    store.update_environment("production", api_key_hash=hash_api_key("k1"))
    assert store.environment_for_api_key("k1")["name"] == "production"
    assert store.environment_for_api_key("k2") is None
    assert store.environment_for_api_key("") is None
    assert "k1" not in repr(store.environment("production"))


# -- messages ---------------------------------------------------------------------


def test_conversation_is_stored_with_its_first_message(store):
    conversation, message = store.create_conversation("test", "Ann", "a@x.org", "ext-1", "Hi")
    assert len(conversation["id"]) == 26
    assert message["conversation_id"] == conversation["id"]
    # Stored already claimed by the request that sends it: no other worker may take it.
    assert message["status"] == "sending" and message["attempts"] == 1
    assert not store.claim_message(message["id"])
    assert message["chunk_post_ids"] == []
    assert store.first_message(conversation["id"])["id"] == message["id"]
    with pytest.raises(NotFound):
        store.conversation(conversation["id"], env="production")


def failed_message(store):
    """A stored message whose first send failed: it is up for a retry."""
    _, message = store.create_conversation("test", "Ann", "", "", "Hi")
    return store.finish_message(message["id"], "failed", error="500")


def test_only_one_claimer_wins_a_message(store, app):
    message = failed_message(store)
    other = Store(app.config["DATABASE"])
    try:
        assert store.claim_message(message["id"]) is True
        assert other.claim_message(message["id"]) is False
        assert store.claim_message(message["id"]) is False
    finally:
        other.close()
    assert store.message(message["id"])["status"] == "sending"
    assert store.message(message["id"])["attempts"] == 2


def test_only_one_of_many_concurrent_claimers_wins(store, app):
    message = failed_message(store)
    stores = [Store(app.config["DATABASE"]) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []

    def claim(worker_store):
        barrier.wait()
        results.append(worker_store.claim_message(message["id"]))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker_store in stores:
        worker_store.close()
    assert sorted(results) == [False] * 7 + [True]


def test_a_failed_message_can_be_claimed_again(store):
    message = failed_message(store)
    assert store.failed_message_ids() == [message["id"]]
    assert store.claim_message(message["id"])
    store.finish_message(message["id"], "failed", error="500")
    assert store.failed_message_ids() == [message["id"]]
    assert store.claim_message(message["id"])
    store.finish_message(message["id"], "sent")
    assert not store.claim_message(message["id"])
    assert store.failed_message_ids() == []


def test_messages_after_pages_oldest_first_and_hides_notes(store):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "m0")
    for i in range(1, 5):
        store.add_visitor_message("test", conversation["id"], "Ann", f"m{i}")
    store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="note",
        author="Bo",
        text="internal",
        post_id=mm_id("pnote"),
    )
    page = store.messages_after(conversation["id"], 0, limit=2, visitor_view=True)
    assert [row["text"] for row in page] == ["m0", "m1"]
    page = store.messages_after(conversation["id"], page[-1]["id"], limit=10, visitor_view=True)
    assert [row["text"] for row in page] == ["m2", "m3", "m4"]
    everything = store.messages_after(conversation["id"], 0)
    assert everything[-1]["text"] == "internal"


def test_inbound_post_is_stored_once(store):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    fields = {
        "env": "test",
        "conversation_id": conversation["id"],
        "direction": "agent",
        "author": "Bo",
        "text": "Hello Ann",
        "post_id": mm_id("mmpost1"),
    }
    first = store.add_inbound_message(**fields)
    assert first is not None
    assert first["status"] == "sent"
    assert store.inbound_post_seen("test", mm_id("mmpost1"))
    assert store.add_inbound_message(**fields) is None
    assert store.add_inbound_message(**{**fields, "direction": "note"}) is None
    texts = [row["text"] for row in store.messages_after(conversation["id"])]
    assert texts.count("Hello Ann") == 1


def test_the_same_post_id_in_the_other_environment_is_a_different_post(store):
    test_conv, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    prod_conv, _ = store.create_conversation("production", "Ann", "", "", "Hi")
    assert store.add_inbound_message(
        env="test",
        conversation_id=test_conv["id"],
        direction="agent",
        author="Bo",
        text="x",
        post_id=mm_id("same"),
    )
    assert store.add_inbound_message(
        env="production",
        conversation_id=prod_conv["id"],
        direction="agent",
        author="Bo",
        text="x",
        post_id=mm_id("same"),
    )
    assert not store.inbound_post_seen("test", mm_id("other"))


def test_inbound_message_with_a_callback_is_due_for_delivery(store):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    message = store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="agent",
        author="Bo",
        text="x",
        post_id=mm_id("p1"),
        delivery_status="pending",
    )
    assert store.due_delivery_ids("test") == [message["id"]]
    assert store.claim_delivery(message["id"])
    assert not store.claim_delivery(message["id"], ignore_schedule=True)
    store.finish_delivery(message["id"], "delivered")
    assert store.due_delivery_ids() == []


# -- rate limits ---------------------------------------------------------------------


def test_hit_rate_limit_counts_within_the_window(store):
    results = [store.hit_rate_limit("chat:1.2.3.4", limit=3, window=60) for _ in range(5)]
    assert results == [False, False, False, True, True]
    assert store.hit_rate_limit("chat:5.6.7.8", limit=3, window=60) is False


def test_hit_rate_limit_starts_a_new_window_when_the_old_one_ends(store):
    for _ in range(3):
        store.hit_rate_limit("b", limit=1, window=60)
    assert store.hit_rate_limit("b", limit=1, window=60) is True
    # The window began 61 s ago: moved back in the row, not waited for.
    store.db.execute("UPDATE rate_limits SET window_start = window_start - 61 WHERE bucket = 'b'")
    assert store.hit_rate_limit("b", limit=1, window=60) is False
    assert store.hit_rate_limit("b", limit=1, window=60) is True  # a new window, counting again


# -- the integration log ----------------------------------------------------------------


def test_log_page_is_newest_first_with_keyset_pagination(store):
    ids = [_log(store, target=f"t{i}") for i in range(7)]
    page1 = store.log_page(limit=3)
    assert [row["id"] for row in page1] == ids[6:3:-1]
    page2 = store.log_page(limit=3, before_id=page1[-1]["id"])
    assert [row["id"] for row in page2] == ids[3:0:-1]
    page3 = store.log_page(limit=3, before_id=page2[-1]["id"])
    assert [row["id"] for row in page3] == [ids[0]]
    assert store.log_page(limit=3, before_id=page3[-1]["id"]) == []


def test_log_page_after_id_is_the_live_tail(store):
    ids = [_log(store) for _ in range(4)]
    assert [row["id"] for row in store.log_page(after_id=ids[1])] == [ids[3], ids[2]]
    assert store.log_page(after_id=ids[3]) == []


def test_log_page_filters_by_environment_direction_and_outcome(store):
    a = _log(store, env="test", direction="outbound", outcome="ok")
    b = _log(store, env="test", direction="inbound", outcome="rejected")
    c = _log(store, env="production", direction="inbound", outcome="ok")
    d = _log(store, env="production", direction="callback", outcome="error")

    def ids(**filters):
        return [row["id"] for row in store.log_page(**filters)]

    assert ids(env="test") == [b, a]
    assert ids(direction="inbound") == [c, b]
    assert ids(outcome="ok") == [c, a]
    assert ids(env="production", direction="inbound") == [c]
    assert ids(env="production", outcome="error", before_id=d) == []
    assert ids(env="production", outcome="error") == [d]


def test_log_keeps_every_field_and_caps_long_errors(store):
    row_id = store.log(
        env="test",
        direction="inbound",
        action="webhook",
        outcome="rejected",
        target=mm_id("ch"),
        http_status=403,
        duration_ms=1.5,
        error="x" * 5000,
        conversation_id=mm_id("c1"),
        message_id=7,
        post_id=mm_id("p1"),
    )
    (row,) = store.log_page()
    assert row["id"] == row_id
    assert (row["http_status"], row["duration_ms"], row["message_id"]) == (403, 1.5, 7)
    assert (row["conversation_id"], row["post_id"], row["target"]) == (
        mm_id("c1"),
        mm_id("p1"),
        mm_id("ch"),
    )
    assert len(row["error"]) == 2000


def test_last_log_finds_the_newest_matching_row(store):
    _log(store, action="verify")
    newest = _log(store, action="verify")
    _log(store, action="post")
    assert store.last_log("test", "outbound", action="verify")["id"] == newest
    assert store.last_log("test", "inbound") is None


def test_prune_log_deletes_rows_older_than_the_age(store):
    old = _log(store)
    week_old = _log(store)
    fresh = _log(store)
    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 40 * 86400, old])
    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 8 * 86400, week_old])
    assert store.prune_log(30) == 1
    assert [row["id"] for row in store.log_page()] == [fresh, week_old]
    assert store.prune_log(7) == 1
    assert [row["id"] for row in store.log_page()] == [fresh]
    assert store.prune_log(7) == 0


def test_live_tail_pages_through_a_burst_instead_of_skipping_it(store):
    first = store.log(env="test", direction="inbound", action="webhook", outcome="ok")
    for _ in range(120):
        store.log(env="test", direction="inbound", action="webhook", outcome="ok")
    page = store.log_page(after_id=first, limit=50)
    assert [row["id"] for row in page] == list(range(first + 50, first, -1))  # newest first
    following = store.log_page(after_id=page[0]["id"], limit=50)
    assert following[-1]["id"] == page[0]["id"] + 1
