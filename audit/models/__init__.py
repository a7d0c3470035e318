"""Model side of loading: architectures, checkpoint formats and one loader per format.

Owns: which architectures a name may build (:mod:`.architectures`, with the demo's
:mod:`.small_cnn`), the checkpoint-format registry and the lazily read file view
(:mod:`.formats`), what every loader returns (:mod:`.loaded`), the weights-only
``torch.load`` (:mod:`.pickles`), and the loaders: :mod:`.prune_audit`, :mod:`.state_dict`
(state_dicts, training wrappers, safetensors, pickled modules), :mod:`.torchscript` and
:mod:`.export` with the ``.pt2`` safety scan (:mod:`.pt2_scan`). Must not touch devices or
data, or run code a file names; ``audit.model_io`` is the public entry point
(``load_model``, ``save_checkpoint``, ``LoadedModel``) and registers the built-in formats.
"""
