"""The paper's claims, measured: ``python -m hsrgeom.attention.experiments <name>``.

Each experiment prints its table and rewrites its own section of ``docs/attention.md`` (between
``<!-- begin:<name> -->`` and ``<!-- end:<name> -->``) and its plots under ``docs/img/``, so the
document is regenerated one experiment at a time. Run ``--help`` for the list and options.
"""
