"""Preprocessing and the bounded page sample: pure functions, no Ray needed."""

from __future__ import annotations

import pandas as pd

from raypipe.classify.preprocess import normalize_text
from raypipe.classify.reservoir import ReservoirSampler, hash_priority


def test_normalize_splits_code_and_defuses_labels() -> None:
    text = "Call getProfile(userId='me') at https://x.io/a?b=1 \n v1.2 __label__agent HTTPServer"
    out = normalize_text(text)
    assert "\n" not in out
    assert "__label__" not in out
    assert out.split() == ("call get profile ( user id = ' me ' ) at urltoken v 0 label agent http server".split())


def test_normalize_truncates_to_max_tokens() -> None:
    text = " ".join(f"word{i}" for i in range(5000))
    assert len(normalize_text(text, max_tokens=100).split()) == 100
    assert normalize_text("", 10) == ""


def _pages(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"url": [f"https://site/{i}" for i in range(offset, offset + n)], "text": ["t"] * n})


def test_reservoir_is_the_same_whatever_the_split_and_order() -> None:
    whole = ReservoirSampler(50, seed=7)
    whole.add(_pages(1000))
    parts = [ReservoirSampler(50, seed=7) for _ in range(3)]
    frame = _pages(1000).sample(frac=1.0, random_state=3)
    for i, start in enumerate(range(0, len(frame), 150)):
        parts[i % 3].add(frame.iloc[start : start + 150])
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    assert parts[0].sample()["url"].tolist() == whole.sample()["url"].tolist()
    assert len(whole.sample()) == 50 and whole.seen == 1000


def test_reservoir_picks_the_same_copy_of_a_repeated_url_in_any_order() -> None:
    """One URL in two input files with different text: the sample must not depend on which came first."""
    pages = _pages(200).assign(text=[f"text {i}" for i in range(200)])
    copies = pages.assign(text=pages["text"] + " (second copy)")
    samples = []
    for first, second in ((pages, copies), (copies, pages)):
        sampler = ReservoirSampler(40, seed=5)
        sampler.add(first)
        sampler.add(second)
        samples.append(sampler.sample())
    pd.testing.assert_frame_equal(samples[0], samples[1])
    assert samples[0]["url"].is_unique


def test_reservoir_call_keeps_only_batch_candidates() -> None:
    sampler = ReservoirSampler(5, seed=1)
    batch = _pages(40)
    local = sampler(batch)
    assert len(local) == 5
    sampler.add(local)
    reference = ReservoirSampler(5, seed=1)
    reference.add(batch)
    assert sampler.sample()["url"].tolist() == reference.sample()["url"].tolist()


def test_reservoir_sample_is_uniform() -> None:
    """Every page is equally likely: over many seeds each of 20 pages is drawn ~ k/n of the time."""
    hits = pd.Series(0, index=_pages(20)["url"])
    for seed in range(400):
        sampler = ReservoirSampler(5, seed=seed)
        sampler.add(_pages(20))
        hits[sampler.sample()["url"]] += 1
    assert hits.between(400 * 0.25 * 0.6, 400 * 0.25 * 1.4).all()


def test_hash_priority_is_stable() -> None:
    assert hash_priority(["a", "b"], 1).tolist() == hash_priority(["a", "b"], 1).tolist()
    assert hash_priority(["a"], 1)[0] != hash_priority(["a"], 2)[0]


def test_seeds_become_pages_as_the_crawl_extracts_them() -> None:
    """A seed is rendered as a doc site's page (title, list, code) and extracted by the crawl's own
    extractor: its content survives, the site's furniture does not become a positive feature."""
    from raypipe.classify.pages import seed_page_html, seeds_as_pages

    seed = (
        "Datadog API - Key Management: Get API key\n\nGET /api/v2/api_keys/{api_key_id}\n\nGet an API key.\n\n"
        "Parameters\n• api_key_id: [REQUIRED] string: The ID of the API key.\n• include: string: paths.\n\n"
        "Example\nimport datadog_api_client\nclient = ApiClient(configuration)"
    )
    page = seed_page_html(seed)
    assert "<h1>Datadog API - Key Management: Get API key</h1>" in page
    assert "<ul><li>api_key_id: [REQUIRED]" in page and "<pre><code>" in page and "<h2>Parameters</h2>" in page
    text = seeds_as_pages([seed, ""])
    assert text[0].startswith("Datadog API - Key Management: Get API key")
    assert "api_key_id: [REQUIRED] string" in text[0] and "client = ApiClient(configuration)" in text[0]
    for furniture in ("Copyright", "Previous", "Getting started", "Privacy"):
        assert furniture not in text[0]
    assert text[1] == ""
