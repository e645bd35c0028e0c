"""raypipe: agent-oriented pre-training corpora from the open web, on Ray Data."""
