"""A polite multi-level crawler of documentation sites into WARC files, on Ray (``raypipe crawl``)."""

from raypipe.crawl.run import crawl_command, run_crawl
from raypipe.crawl.seed_records import crawl_warcs_to_seed_records

__all__ = ["crawl_command", "crawl_warcs_to_seed_records", "run_crawl"]
