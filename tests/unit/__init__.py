"""In-process tests: no root, no switches, no child servers; each file runs in seconds."""
