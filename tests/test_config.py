"""Configuration: unknown keys are errors that name the key; --set overrides; YAML is loaded safely."""

from __future__ import annotations

import pytest

from raypipe.config import ConfigError, load_config

BASE = "input: s3://b/in/*.warc.gz\noutput: s3://b/out\n"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["extract.languages=[en, de]", "quality.min_words=10", "limit_files=3"])
    assert cfg.extract.languages == ["en", "de"]
    assert cfg.quality.min_words == 10
    assert cfg.limit_files == 3
    assert cfg.extract.extractor == "resiliparse"


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        (BASE + "extrct: {}\n", [], "unknown key 'extrct'"),
        (BASE + "extract:\n  languges: [en]\n", [], "unknown key 'extract.languges'"),
        (BASE, ["quality.min_wrds=3"], "unknown key 'quality.min_wrds'"),
        (BASE, ["limit_files=zero"], "limit_files"),
        ("output: s3://b/out\n", [], "input: Field required"),
        (BASE + "extract:\n  extractor: magic\n", [], "extract.extractor"),
        (BASE, ["novalue"], "--set expects key=value"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(write(tmp_path, text), sets)


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, BASE + "x: !!python/object/apply:os.system ['true']\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_config_hash_is_stable(tmp_path):
    a = load_config(write(tmp_path, BASE))
    b = load_config(write(tmp_path, BASE), ["seed=1234"])
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != load_config(write(tmp_path, BASE), ["seed=1"]).config_hash()
