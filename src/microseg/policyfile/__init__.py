"""Policy as code: YAML files (apiVersion microseg.io/v1) <-> the model.

`load`, `load_text` and `load_data` (documents already parsed, from the API) build an Estate or
raise PolicyFileError listing every problem of every file with file, line and field path; `dump`
and `dump_dir` write an estate back, stably (canonical order, so that a diff shows changes of
meaning only). `synthetic.generate` makes large estates for benchmarks and property tests. The
format is described in docs/policy-file.md.

Inside: nodes (YAML with lines) -> reader (typed access, problems) -> kinds / policies (builders)
-> checks (across documents) -> loader (the flow) -> canonical (order) <- dumper.
"""

from microseg.policyfile.dumper import dump, dump_dir
from microseg.policyfile.loader import load, load_data, load_text

__all__ = ["dump", "dump_dir", "load", "load_data", "load_text"]
