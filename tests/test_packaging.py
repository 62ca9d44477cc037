"""Packaging: console script, license, Meltano project, Hub definition, .env.example, README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from scripts import hub_definition, readme_settings
from tap_kustomer.tap import STREAM_TYPES

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "tests" / "fixtures" / "meltano_hub_schemas"
DIST = "kustomer-singer-tap"
#: Every stream the tap selects by default; meltano.yml selects the same set.
STREAMS = tuple(stream.name for stream in STREAM_TYPES if stream.selected_by_default)
#: Streams a user adds explicitly (documented, not selected).
ALL_STREAMS = tuple(stream.name for stream in STREAM_TYPES)


def _console_script() -> Path:
    return Path(sys.executable).with_name("tap-kustomer")


@cache
def _about() -> dict[str, Any]:
    out = subprocess.run(
        [str(_console_script()), "--about", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out))


def _about_settings() -> list[str]:
    return list(_about()["settings"]["properties"])


def _meltano_project() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "meltano.yml").read_text()))


def _plugin(kind: str, name: str) -> dict[str, Any]:
    plugins = _meltano_project()["plugins"][kind]
    return next(p for p in plugins if p["name"] == name)


def _hub_file() -> Path:
    return hub_definition.HUB_FILE


def _hub_validator() -> jsonschema.Draft7Validator:
    by_name = {p.name: p for p in SCHEMAS.rglob("*.schema.json")}

    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(json.loads(by_name[uri.rsplit("/", 1)[-1]].read_text()))

    root = json.loads((SCHEMAS / "plugin_definitions" / "extractors.schema.json").read_text())
    return jsonschema.Draft7Validator(root, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


# -- distribution -------------------------------------------------------------------------------


def test_console_script_prints_distribution_version() -> None:
    out = subprocess.run(
        [str(_console_script()), "--version"], check=True, capture_output=True, text=True
    ).stdout
    assert version(DIST) in out
    assert out.startswith("tap-kustomer")


def test_python_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tap_kustomer", "--about", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(out)["name"] == "tap-kustomer"


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 10_000  # the full text, not a stub
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = "Apache-2.0"' in pyproject


# -- Meltano project ----------------------------------------------------------------------------


def test_meltano_extractor_settings_match_about() -> None:
    tap = _plugin("extractors", "tap-kustomer")
    assert [s["name"] for s in tap["settings"]] == _about_settings()
    assert tap["namespace"] == "tap_kustomer"
    assert tap["executable"] == "tap-kustomer"
    assert tap["pip_url"] == "-e ."
    assert tap["settings_group_validation"] == [sorted(_about()["settings"]["required"])]


def test_meltano_extractor_kinds_and_capabilities() -> None:
    tap = _plugin("extractors", "tap-kustomer")
    props = _about()["settings"]["properties"]
    for setting in tap["settings"]:
        prop = props[setting["name"]]
        assert setting.get("sensitive", False) == bool(prop.get("secret")), setting["name"]
        if "enum" in prop:
            assert sorted(o["value"] for o in setting["options"]) == sorted(prop["enum"])
        if "default" in prop:
            assert setting.get("value") == prop["default"], setting["name"]
        assert setting["kind"] not in ("password", "hidden"), "deprecated kinds in Meltano 4"
    assert sorted(tap["capabilities"]) == sorted(_about()["capabilities"])
    assert tap["select"] == [f"{s}.*" for s in STREAMS]


def test_meltano_project_runs_without_hub() -> None:
    project = _meltano_project()
    for kind in ("extractors", "loaders"):
        defined = {p["name"] for p in project["plugins"][kind] if "inherit_from" not in p}
        for plugin in project["plugins"][kind]:
            if "inherit_from" in plugin:
                # An inheriting plugin needs no Hub either when its parent is defined here.
                assert plugin["inherit_from"] in defined, plugin["name"]
                continue
            for key in ("namespace", "pip_url", "executable", "settings"):
                assert key in plugin, f"{plugin['name']} lacks {key}: it would need Meltano Hub"
    postgres = _plugin("loaders", "target-postgres")
    assert postgres["config"]["default_target_schema"] == "tap_kustomer"
    assert "meltanolabs-target-postgres" in postgres["pip_url"]
    jobs = {j["name"]: j["tasks"] for j in project["jobs"]}
    assert jobs["kustomer-to-postgres"] == ["tap-kustomer target-postgres"]
    schedule = next(s for s in project["schedules"] if s["name"] == "kustomer-every-4-hours")
    assert schedule == {
        "name": "kustomer-every-4-hours",
        "interval": "0 */4 * * *",
        "job": "kustomer-to-postgres",
    }
    # Targeted runs from the webhook queue: their own extractor (own state), every 5 minutes.
    webhook = _plugin("extractors", "tap-kustomer-webhook")
    assert webhook["inherit_from"] == "tap-kustomer"
    assert webhook["config"]["webhook_queue"].startswith("sqlite:///")
    assert jobs["kustomer-webhook-to-postgres"] == ["tap-kustomer-webhook target-postgres"]
    schedule = next(s for s in project["schedules"] if s["job"] == "kustomer-webhook-to-postgres")
    assert schedule["interval"] == "*/5 * * * *"
    assert project["default_environment"] in {e["name"] for e in project["environments"]}


# -- Meltano Hub definition ---------------------------------------------------------------------


def test_hub_definition_validates_against_hub_schema() -> None:
    doc = yaml.safe_load(_hub_file().read_text())
    errors = sorted(_hub_validator().iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message for e in errors)


def test_hub_schema_validator_rejects_bad_definitions() -> None:
    doc = yaml.safe_load(_hub_file().read_text())
    validator = _hub_validator()
    assert not validator.is_valid({k: v for k, v in doc.items() if k != "quality"})
    assert not validator.is_valid({**doc, "unknown_key": 1})
    bad_setting = {**doc, "settings": [{"name": "x", "kind": "not-a-kind"}]}
    assert not validator.is_valid(bad_setting)  # proves $refs into common/ are followed


def test_hub_definition_is_current() -> None:
    assert _hub_file().read_text() == hub_definition.render(_about())


def test_hub_definition_matches_about() -> None:
    doc = yaml.safe_load(_hub_file().read_text())
    assert [s["name"] for s in doc["settings"]] == _about_settings()
    assert doc["name"] == "tap-kustomer"
    assert doc["namespace"] == _plugin("extractors", "tap-kustomer")["namespace"]
    assert doc["pip_url"] == DIST
    assert doc["quality"] == "unknown"
    assert doc["maintenance_status"] == "development"
    assert sorted(doc["capabilities"]) == sorted(_about()["capabilities"])
    assert doc["supported_python_versions"] == _about()["supported_python_versions"]
    api_key = next(s for s in doc["settings"] if s["name"] == "api_key")
    assert api_key["sensitive"] is True
    # The Hub keeps a definition at extractors/<name>/<variant>.yml.
    assert _hub_file().parent.name == doc["name"] == _about()["name"]
    assert _hub_file().stem == doc["variant"]


# -- .env.example and README --------------------------------------------------------------------


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*(TAP_KUSTOMER_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {f"TAP_KUSTOMER_{name.upper()}" for name in _about_settings()}
    assert listed == expected


def test_readme_settings_table_is_current() -> None:
    markdown = subprocess.run(
        [str(_console_script()), "--about", "--format", "markdown"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    readme = (ROOT / "README.md").read_text()
    assert readme_settings.START in readme
    assert readme_settings.END in readme
    table = readme_settings.settings_table(markdown)
    assert readme_settings.updated(readme, table) == readme, (
        "README settings table is stale: run python -m scripts.readme_settings"
    )


@pytest.mark.parametrize("stream", ALL_STREAMS)
def test_readme_documents_each_stream(stream: str) -> None:
    assert f"`{stream}`" in (ROOT / "README.md").read_text()
