"""The clean phase's stages and operations: decontamination, row-local signals, label attachment."""
