"""Hyperparameter search (``dlrun tune``): a recipe's ``search:`` section as an Optuna study.

Modules: ``study`` (storage, name, resume, sampler, pruner), ``trial`` (one trial through the
normal runner, pruning reporter), ``best`` (the best recipe file, the table), ``tune`` (the whole).
Nothing here is imported by the CLI at start-up.
"""
