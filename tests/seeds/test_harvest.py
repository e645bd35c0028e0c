"""The module API harvester on real stdlib modules, and its guards against bad modules."""

from __future__ import annotations

import os

from raypipe.config import SeedsConfig
from raypipe.seeds import harvest_api_docs
from raypipe.seeds.harvest import expand_modules


def test_harvest_stdlib_modules():
    seeds, stats = harvest_api_docs(SeedsConfig(harvest_modules=["json", "textwrap"]))
    by_name = {s["apis"][0]: s for s in seeds}
    assert {"json.dumps", "json.JSONDecoder", "json.JSONDecoder.decode", "textwrap.dedent"} <= set(by_name)
    dumps = by_name["json.dumps"]["text"]
    assert dumps.startswith("json.dumps\n\nfunction in module json\n\ndumps(obj, *, skipkeys=False")
    assert "Serialize obj to a JSON formatted str" in dumps
    assert all(not part.startswith("_") for s in seeds for part in s["apis"][0].split("."))
    assert all(s["kind"] == "api_doc" and s["source"] == "python_stdlib" and s["license"] for s in seeds)
    assert stats["distinct_apis"] >= len(seeds) and stats["top_modules"] == 2 and stats["failures_total"] == 0


def test_harvest_is_the_same_in_every_process():
    """Seeds feed the classifier: a text that changes between runs (a default's memory address in
    a signature) changes the model and the selection. json.JSONDecoder.decode has such a default."""
    first, _ = harvest_api_docs(SeedsConfig(harvest_modules=["json"]))
    second, _ = harvest_api_docs(SeedsConfig(harvest_modules=["json"]))
    assert [s["text"] for s in first] == [s["text"] for s in second]
    decode = next(s["text"] for s in first if s["apis"][0] == "json.JSONDecoder.decode")
    assert "re.Pattern object>" in decode and " at 0x" not in decode


def test_harvest_survives_broken_noisy_and_hanging_modules(tmp_path, monkeypatch):
    (tmp_path / "rp_noisy.py").write_text('print("garbage on stdout")\ndef ok(x):\n    """Documented."""\n')
    (tmp_path / "rp_broken.py").write_text("raise RuntimeError('cannot import me')\n")
    (tmp_path / "rp_hang.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "rp_after.py").write_text('def later():\n    """Still harvested after a hang."""\n')
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cfg = SeedsConfig(
        harvest_modules=["rp_noisy", "rp_broken", "rp_hang", "rp_after", "rp_missing_module"],
        harvest_module_timeout_s=3,
    )
    seeds, stats = harvest_api_docs(cfg)
    assert sorted(s["apis"][0] for s in seeds) == ["rp_after.later", "rp_noisy.ok"]
    failures = "\n".join(stats["failures"])
    assert "rp_broken: RuntimeError: cannot import me" in failures
    assert "rp_hang: timed out" in failures and stats["module_timeouts"] == 1
    assert "rp_missing_module: ModuleNotFoundError" in failures


def test_default_module_list_covers_stdlib_and_installed():
    names = expand_modules(SeedsConfig())
    assert {"json", "asyncio", "numpy", "pandas"} <= set(names)
    assert not {"antigravity", "this", "idlelib"} & set(names)
    assert all(not n.startswith("_") for n in names)
