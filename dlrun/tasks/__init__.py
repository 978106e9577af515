"""Tasks that are not ``fit``: looking inside a trained convnet (``explain``), optimizing an input
image (``dream``, ``style``) and sampling text (``textgen``). Plain functions over a built Keras
model and NumPy arrays, writing PNG or text files; each module's docstring says how a recipe task
and the CLI reach it."""
