"""das: distillation-aware neural architecture search.

Importing das loads the built-in search spaces, which hand :meth:`das.spec.ArchSpec.build` its
builder: a spec is plain data below the spaces, so it builds through them without importing them.
"""

from das import spaces as _spaces  # noqa: F401  (registers the built-in spaces; ArchSpec.build builds through them)
