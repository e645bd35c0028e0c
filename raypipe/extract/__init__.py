"""HTML to text, language identification and quality signals (phase 2, CPU)."""

from raypipe.extract.stage import ExtractStage

__all__ = ["ExtractStage"]
