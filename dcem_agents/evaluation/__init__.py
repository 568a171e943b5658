"""Evaluation: the one harness, the one statistics convention, and the reports built on them.

===========================  =====  ==========================================================================
module                       layer  what it holds
===========================  =====  ==========================================================================
``stats``                    math   sample std (ddof 1), bootstrap CI, IQM, paired differences
``harness``                  train  :func:`~dcem_agents.evaluation.harness.evaluate_controller`: the only loop
                                    that evaluates a controller (trainers, runners, ``evaluate.py``, reports)
``report``                   train  the comparison report's table, box plot, CSV and JSON
``regression_figures``,      train  figures of the regression and cartpole-embedding experiments
``cartpole_embed_figures``
``entries``, ``compare``,    top    the controller comparison (``evaluate.py --entry``): loads checkpoints of
``video``                           every experiment, so it sits above the runners
===========================  =====  ==========================================================================

The layers are checked by ``tests/test_layers.py`` (``MODULE_LAYERS``). This file imports nothing, so the lower
modules can be imported without the comparison's dependencies.
"""
