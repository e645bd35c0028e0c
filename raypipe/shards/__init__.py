"""Trainer-ready output: tokenizer actor, Megatron ``.bin/.idx`` writer, manifest and datasheet."""
