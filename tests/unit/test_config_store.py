"""Rules, destinations and the audit trail in the job database (SQLite file): upserts by name,
one audit entry per change written in the change's own transaction, secrets masked."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, exc, text

from node.db.config_store import MASK, ConfigNotFoundError, ConfigStore, mask_secrets
from node.db.secrets import SecretBox
from node.rules.model import Rule
from tests.unit.job_db import Clock


@pytest.fixture
def config(engine: Engine, clock: Clock, secret_box: SecretBox) -> ConfigStore:
    return ConfigStore(engine, clock=clock, secrets=secret_box)


def rule(name: str = "ct-chest", condition: str = 'Modality == "CT"') -> dict:
    return Rule(name=name, condition=condition, pipelines=["ct-tissue"]).model_dump(mode="json")


def dicomweb(password: str = "s3cret") -> dict:
    return {
        "type": "dicomweb",
        "name": "archive",
        "url": "https://pacs.example/dicom-web",
        "auth": {"type": "basic", "username": "ai", "password": password},
    }


def test_save_rule_creates_it_and_returns_no_previous_version(config: ConfigStore, clock: Clock) -> None:
    before, after = config.save_rule(rule(), actor="alice")
    assert before is None
    assert (after.name, dict(after.document), after.created_at) == ("ct-chest", rule(), clock.now)
    assert config.get_rule("ct-chest") == after


def test_save_rule_again_replaces_it_and_returns_the_previous_version(
    config: ConfigStore, clock: Clock
) -> None:
    config.save_rule(rule(), actor="alice")
    clock.advance(60)
    before, after = config.save_rule(rule(condition='Modality == "MR"'), actor="bob")
    assert before is not None and before.document["condition"] == 'Modality == "CT"'
    assert after.document["condition"] == 'Modality == "MR"'
    assert (after.created_at, after.updated_at) == (before.created_at, clock.now)
    assert [r.name for r in config.list_rules()] == ["ct-chest"]


def test_save_rule_writes_an_audit_entry_with_before_and_after(config: ConfigStore, clock: Clock) -> None:
    config.save_rule(rule(), actor="alice")
    config.save_rule(rule(condition='Modality == "MR"'), actor="bob")
    latest, first = config.audit()
    assert (first.actor, first.action, first.subject_type, first.subject_name) == (
        "alice",
        "create",
        "rule",
        "ct-chest",
    )
    assert (first.before, first.after, first.at) == (None, rule(), clock.now)
    assert (latest.actor, latest.action) == ("bob", "update")
    assert latest.before == rule() and latest.after == rule(condition='Modality == "MR"')


def test_saving_an_unchanged_rule_adds_no_audit_entry(config: ConfigStore) -> None:
    config.save_rule(rule(), actor="alice")
    config.save_rule(rule(), actor="alice")
    assert len(config.audit()) == 1


def test_a_failing_audit_insert_rolls_back_the_save(engine: Engine, config: ConfigStore) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
            )
        )
    with pytest.raises(exc.DBAPIError, match="audit refused"):
        config.save_rule(rule(), actor="alice")
    assert config.get_rule("ct-chest") is None


def test_save_rule_refuses_a_document_without_a_name(config: ConfigStore) -> None:
    with pytest.raises(ValueError, match="rule name is None; it must be a non-empty string"):
        config.save_rule({"condition": "true"}, actor="alice")


def test_save_rule_refuses_an_empty_actor(config: ConfigStore) -> None:
    with pytest.raises(ValueError, match="actor is ''; it must be a non-empty string"):
        config.save_rule(rule(), actor="")


def test_delete_rule_removes_it_and_records_what_it_was(config: ConfigStore) -> None:
    config.save_rule(rule(), actor="alice")
    deleted = config.delete_rule("ct-chest", actor="bob")
    assert deleted.name == "ct-chest"
    assert config.get_rule("ct-chest") is None
    entry = config.audit(limit=1)[0]
    assert (entry.action, entry.actor, entry.before, entry.after) == ("delete", "bob", rule(), None)


def test_delete_of_a_missing_rule_raises_not_found(config: ConfigStore) -> None:
    with pytest.raises(ConfigNotFoundError, match="there is no rule named 'nope'"):
        config.delete_rule("nope", actor="alice")


def test_save_destination_keeps_its_secrets_and_masks_them_in_the_audit(config: ConfigStore) -> None:
    before, after = config.save_destination("archive", "dicomweb", dicomweb(), actor="alice")
    assert before is None
    assert after.type == "dicomweb" and after.document["auth"]["password"] == "s3cret"
    stored = config.get_destination("archive")
    assert stored is not None and stored.document["auth"]["password"] == "s3cret"
    entry = config.audit()[0]
    assert entry.after is not None and entry.after["auth"]["password"] == MASK
    assert entry.after["type"] == "dicomweb" and entry.after["auth"]["username"] == "ai"


def test_changing_a_destination_password_is_audited_with_both_versions_masked(config: ConfigStore) -> None:
    config.save_destination("archive", "dicomweb", dicomweb("old"), actor="alice")
    before, after = config.save_destination("archive", "dicomweb", dicomweb("new"), actor="bob")
    assert before is not None and before.document["auth"]["password"] == "old"
    assert after.document["auth"]["password"] == "new"
    entry = config.audit()[0]
    assert entry.action == "update"
    assert entry.before is not None and entry.after is not None
    assert entry.before["auth"]["password"] == entry.after["auth"]["password"] == MASK


def test_delete_destination_is_audited_masked(config: ConfigStore) -> None:
    config.save_destination("archive", "dicomweb", dicomweb(), actor="alice")
    config.delete_destination("archive", actor="bob")
    assert config.list_destinations() == []
    entry = config.audit()[0]
    assert entry.action == "delete" and entry.before is not None
    assert entry.before["auth"]["password"] == MASK


def test_record_action_stores_a_manual_action_with_masked_details(config: ConfigStore, clock: Clock) -> None:
    entry = config.record_action("alice", "retry", "delivery", "17", {"destination": "archive", "token": "t"})
    assert (entry.at, entry.actor, entry.action, entry.subject_type, entry.subject_name) == (
        clock.now,
        "alice",
        "retry",
        "delivery",
        "17",
    )
    assert entry.after == {"destination": "archive", "token": MASK}
    assert config.audit() == [entry]


def test_record_action_refuses_an_unknown_subject_type(config: ConfigStore) -> None:
    with pytest.raises(ValueError, match="audit subject type 'planet' is not one of"):
        config.record_action("alice", "retry", "planet", "17")


def test_audit_pages_newest_first(config: ConfigStore, clock: Clock) -> None:
    for n in range(5):
        clock.advance(1)
        config.record_action("alice", "retry", "job", str(n))
    assert [e.subject_name for e in config.audit(limit=2, offset=1)] == ["3", "2"]


def test_mask_secrets_masks_matching_keys_at_any_depth() -> None:
    document = {
        "name": "archive",
        "auth": {"Password": "p", "client_secret": "s", "username": "u"},
        "headers": [{"api_token": "t", "accept": "json"}],
        "secret": None,
    }
    assert mask_secrets(document) == {
        "name": "archive",
        "auth": {"Password": MASK, "client_secret": MASK, "username": "u"},
        "headers": [{"api_token": MASK, "accept": "json"}],
        "secret": None,
    }


def test_mask_secrets_masks_a_whole_nested_object_under_a_secret_key() -> None:
    assert mask_secrets({"tokens": {"a": "1"}, "list": [1, "x"]}) == {"tokens": MASK, "list": [1, "x"]}


def test_mask_secrets_leaves_its_input_unchanged() -> None:
    document = {"auth": {"password": "p"}}
    mask_secrets(document)
    assert document == {"auth": {"password": "p"}}
