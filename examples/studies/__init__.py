"""Studies and diagnoses of the two-stage detector, apart from its package ``wstal``: the paper's ablation
and the quality bars (:mod:`studies.experiments`, run by ``examples/thumos_two_stage.py``), the robustness
grid and its diagnostics (``robustness_grid.py``, :mod:`studies.candidate_variants`,
``compare_schedules.py``), the Stage-1 merge variants (``merge_variants.py``) and the calibration of the
action-context family (``calibrate_context.py``).

They sit on top of the detector: a study trains through :class:`wstal.pipeline.DetectorRunner` and
detects through :func:`wstal.inference.detect`, and nothing in ``wstal`` imports a study. The scripts
run as ``python examples/studies/NAME.py ...``; each puts ``examples/`` on ``sys.path`` first, so both
``wstal`` and ``studies`` import.
"""
