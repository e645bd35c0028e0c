"""Language identification of a page's prose (raypipe/extract/language.py) with the real lid.176 model.

The texts are small, written for these tests in the shape of the pages that went wrong: API
references where signatures, identifiers and code outweigh the sentences. They must come out
English or unknown, never foreign, while plain German and French prose stays German and French.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from raypipe.config import ExtractConfig, QualityConfig
from raypipe.extract import extract_and_select
from raypipe.extract.language import UNKNOWN, identify, model, prose

CFG = ExtractConfig()

CPP_REFERENCE = """jsonlib::basic_value::at
reference at(size_type idx);
const_reference at(size_type idx) const;
template<typename KeyType>
reference at(KeyType&& key);
Returns a reference to the element at the given position, with bounds checking.
Parameters
idx (in)
index of the element to access
Exceptions
Throws type_error.304 if the value is not an array; at() with an index then makes no sense.
Complexity
Constant.
#include <iostream>
#include <jsonlib/value.hpp>
int main()
{
    jsonlib::value v = {"uno", "due", "tre", "quattro"};
    std::cout << v.at(1) << '\\n';
    v.at(1) = "zwei";
    try { v.at(5) = "cinque"; }
    catch (const jsonlib::out_of_range& e) { std::cout << e.what() << '\\n'; }
}
Output:
"due"
[value.exception.out_of_range.401] index 5 is out of range
"""

PY_CACHE_MODULE = """memokit.lru
class memokit.lru.LRUCache(maxsize, getsizeof=None)
maxsize: int
getsizeof: Callable[[Any], int] | None
LRUCache.popitem() -> tuple[Hashable, Any]
Remove and return the pair that was used least recently.
memokit.lru.cached(cache, key=memokit.keys.hashkey, lock=None, info=False)
@cached(cache=LRUCache(maxsize=32))
def get_pep(num):
    url = 'https://peps.example.org/pep-%04d/' % num
    with urllib.request.urlopen(url) as s:
        return s.read()
>>> get_pep.cache_info()
CacheInfo(hits=3, misses=8, maxsize=32, currsize=8)
>>> get_pep.cache_clear()
cache_info()
cache_clear()
"""

GERMAN = """Die Stadtverwaltung hat am Mittwoch ein neues Konzept für den Nahverkehr vorgestellt.
Nach Angaben der Verkehrsbetriebe sollen die Busse in den Außenbezirken künftig alle zehn Minuten fahren.
Kritiker im Stadtrat bemängeln, dass die Finanzierung des Vorhabens noch völlig ungeklärt sei.
"""

FRENCH = """Le conseil municipal a voté hier soir la rénovation complète de la bibliothèque du centre-ville.
Les travaux devraient commencer au printemps et durer environ dix-huit mois, selon le maire.
Pendant cette période, les lecteurs pourront emprunter des livres dans une salle provisoire près de la gare.
"""

# A German API page: its prose is German, its code is not, and it must stay German.
GERMAN_DOCS = """Die Funktion lädt eine Konfigurationsdatei und gibt ein Wörterbuch mit allen Einstellungen zurück.
config = lade_konfiguration("einstellungen.toml")
print(config["datenbank"]["host"])
Fehlt die Datei, wird eine Ausnahme ausgelöst, die den vollständigen Pfad der gesuchten Datei nennt.
"""


def run(text: str):
    return identify(text, CFG.language_min_confidence, CFG.language_min_prose_words, CFG.language_code_heavy)


@pytest.mark.parametrize("text", [CPP_REFERENCE, PY_CACHE_MODULE], ids=["cpp-reference", "python-cache-module"])
def test_code_heavy_english_pages_are_english_or_unknown(text: str) -> None:
    found = run(text)
    assert found.code in ("en", UNKNOWN), found
    assert found.code_fraction >= CFG.language_code_heavy, "these pages are mostly code"


@pytest.mark.parametrize(("text", "lang"), [(GERMAN, "de"), (FRENCH, "fr"), (GERMAN_DOCS, "de")])
def test_foreign_prose_keeps_its_language(text: str, lang: str) -> None:
    found = run(text)
    assert found.code == lang, found
    assert found.score >= CFG.language_min_confidence


@pytest.mark.parametrize("text", ["", "   \n\n", "int main() { return f(x) + g(y); }\nfoo_bar(baz);\n>>> a.b(c)\n"])
def test_empty_or_pure_code_is_unknown(text: str) -> None:
    found = run(text)
    assert found.code == UNKNOWN
    assert found.score == 0.0


def test_prose_drops_code_lines_and_identifiers() -> None:
    body, code_fraction = prose(PY_CACHE_MODULE)
    assert "Remove and return the pair that was used least recently." in body
    for code in ("LRUCache", "get_pep", "cache_info", "urlopen", "getsizeof", ">>>", "memokit.lru"):
        assert code not in body, code
    assert 0.5 < code_fraction < 1.0
    body, code_fraction = prose(FRENCH)
    assert body == " ".join(FRENCH.split()) and code_fraction == 0.0


def test_low_confidence_code_heavy_page_is_unknown_not_foreign() -> None:
    """A guess below the threshold on a code-heavy page is unknown; the same guess on prose is kept."""
    strict = 1.01  # no probability reaches it: every guess is low-confidence
    heavy = identify(CPP_REFERENCE, strict, CFG.language_min_prose_words, CFG.language_code_heavy)
    assert heavy.code == UNKNOWN and heavy.score > 0
    plain = identify(GERMAN, strict, CFG.language_min_prose_words, CFG.language_code_heavy)
    assert plain.code == "de"


def test_model_is_loaded_once_from_the_wheel() -> None:
    assert model() is model()
    labels, _ = model().predict("this is plainly an English sentence about the weather", k=1)
    assert labels[0] == "__label__en"


def _page(body: str) -> bytes:
    paragraphs = "".join(f"<p>{line}</p>" for line in body.splitlines() if line.strip())
    return f"<html><head><title>t</title></head><body><article>{paragraphs}</article></body></html>".encode()


def test_stage_keeps_unknown_and_drops_foreign() -> None:
    """Through extraction and its Select: foreign prose is dropped (``language``), an unknown page not."""
    code_only = "\n".join(f"x_{i} = compute_{i}(arg_{i}, key={i});" for i in range(60))
    rows = {
        "url": ["https://a.example/de", "https://a.example/code"],
        "html": [_page(GERMAN), _page(code_only)],
        "charset": ["utf-8", "utf-8"],
        "html_truncated": [False, False],
        "warc_record_id": ["r1", "r2"],
        "warc_date": [None, None],
        "http_status": [200, 200],
        "source_file": ["f.warc.gz", "f.warc.gz"],
        "record_index": [0, 1],
        "file_stats": [None, None],
    }
    batch = pa.table(rows)
    kept = {d["url"]: d for d in extract_and_select(batch, ExtractConfig(), QualityConfig()).to_pylist()}
    assert kept["https://a.example/de"]["language"] == "de"
    assert kept["https://a.example/de"]["drop_reason"] == "language"
    assert kept["https://a.example/code"]["language"] == UNKNOWN
    assert kept["https://a.example/code"]["drop_reason"] != "language"  # a quality rule may still drop it
    strict = ExtractConfig(keep_unknown_language=False)
    dropped = {d["url"]: d for d in extract_and_select(batch, strict, QualityConfig()).to_pylist()}
    assert dropped["https://a.example/code"]["drop_reason"] == "language"


def test_resiliparse_rank_key_is_gone() -> None:
    """A config that still sets the old resiliparse distance is refused, not silently ignored."""
    with pytest.raises(ValueError, match="max_language_rank"):
        ExtractConfig(max_language_rank=1200)
