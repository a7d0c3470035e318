"""Optional sinks for a finished audit (MLflow).

Owns: sending a written audit to systems outside the report directory. Must not compute a
metric, change a report, or import an optional dependency before it is asked for: each
integration checks that its extra is installed when the config is built, and imports it only
when it runs, after the reports are in place.
"""
