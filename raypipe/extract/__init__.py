"""HTML to text, language identification and quality signals (phase 2, CPU)."""

from raypipe.extract.stage import ExtractStage, extract_and_select, extract_rules

__all__ = ["ExtractStage", "extract_and_select", "extract_rules"]
