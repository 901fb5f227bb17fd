"""kvnet's benchmarks: each module runs as ``python -m bench.<name>``, prints a table that
compares like with like in one run, and writes it as Markdown to ``docs/bench/<name>.md``."""
