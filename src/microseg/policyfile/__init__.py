"""Policy as code: YAML files (apiVersion microseg.io/v1) <-> the model.

`load` and `load_text` build an Estate or raise PolicyFileError listing every problem with file,
line and field path; `dump` and `dump_dir` write an estate back, stably. `synthetic.generate`
makes large estates for benchmarks and property tests. The format is in docs/policy-file.md.
"""

from microseg.policyfile.dump import dump, dump_dir
from microseg.policyfile.loader import load, load_text

__all__ = ["dump", "dump_dir", "load", "load_text"]
