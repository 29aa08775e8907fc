"""`ai-node rules export|import` over a real job database in a temporary data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from node.cli.main import main
from node.db.config_store import ConfigStore
from node.db.database import create_engine_for, migrate
from node.rules.model import Rule


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "var"
    folder.mkdir()
    url = f"sqlite:///{folder / 'jobs.sqlite'}"
    migrate(url)
    store = ConfigStore(create_engine_for(url))
    rule = Rule(name="ct-head", condition='Modality == "CT"', pipelines=["ct-tissue"])
    store.save_rule(rule.model_dump(mode="json"), actor="test")
    return folder


def config_store(data_dir: Path) -> ConfigStore:
    return ConfigStore(create_engine_for(f"sqlite:///{data_dir / 'jobs.sqlite'}"))


def test_export_writes_the_stored_rules(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rules.yaml"
    assert main(["rules", "export", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    document = yaml.safe_load(out.read_text())
    assert [rule["name"] for rule in document["rules"]] == ["ct-head"]


def test_import_is_a_dry_run_until_applied(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rules.yaml"
    main(["rules", "export", "--data-dir", str(data_dir), "--out", str(out)])
    document = yaml.safe_load(out.read_text())
    document["rules"][0]["priority"] = "urgent"
    document["rules"].append(
        {"name": "mr-brain", "condition": 'Modality == "MR"', "pipelines": ["brain-extraction"]}
    )
    out.write_text(yaml.safe_dump(document))
    capsys.readouterr()

    assert main(["rules", "import", "--data-dir", str(data_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "+ add rule mr-brain" in printed
    assert "~ rule ct-head: priority 'routine' -> 'urgent'" in printed
    assert "Dry run: nothing changed" in printed
    assert [rule.name for rule in config_store(data_dir).list_rules()] == ["ct-head"]

    assert main(["rules", "import", "--data-dir", str(data_dir), str(out), "--apply"]) == 0
    store = config_store(data_dir)
    assert [rule.name for rule in store.list_rules()] == ["ct-head", "mr-brain"]
    actors = {entry.actor for entry in store.audit() if entry.subject_name == "mr-brain"}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_an_invalid_file_names_each_problem_and_changes_nothing(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "rules": [
                    {"name": "typo", "condition": 'Modality = "CT"', "pipelines": ["ct-tissue"]},
                    {"name": "ghost", "condition": "true", "pipelines": ["no-such-pipeline"]},
                ],
            }
        )
    )
    assert main(["rules", "import", "--data-dir", str(data_dir), str(bad), "--apply"]) == 2
    errors = capsys.readouterr().err
    assert "rule 1 ('typo')" in errors and "column" in errors, errors
    assert [rule.name for rule in config_store(data_dir).list_rules()] == ["ct-head"]
    bad.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "rules": [{"name": "ghost", "condition": "true", "pipelines": ["no-such-pipeline"]}],
            }
        )
    )
    assert main(["rules", "import", "--data-dir", str(data_dir), str(bad), "--apply"]) == 2
    assert "no-such-pipeline" in capsys.readouterr().err
