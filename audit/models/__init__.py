"""Model side of loading: the architecture registry and the checkpoint-format registry.

Owns: which architectures a name may build (:mod:`audit.models.architectures`) and which
checkpoint formats exist and how each is detected and loaded
(:mod:`audit.models.formats`). Must not touch devices or data; ``audit.model_io`` is the
public entry point (``load_model``, ``save_checkpoint``, ``LoadedModel``).
"""
