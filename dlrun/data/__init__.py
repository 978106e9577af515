"""Data: sources (``sources``), test/validation/K-fold splits (``splits``) and the
preprocessing transforms fitted on the training part only (``transforms``).

Nothing is imported here so that ``import dlrun.data.x`` stays cheap; TensorFlow and Keras
are imported only inside the functions that need them.
"""
