"""Trainer-ready output: the shard phase's inputs, tokenizer actor, shard layout and shard writer."""
