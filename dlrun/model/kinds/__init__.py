"""Model kinds with their own training step (the book's chapter 8): ``vae`` and ``gan``.

Each kind is a ``keras.Model`` subclass trained by ``fit`` (callbacks, progress, checkpoints
keep working), built from sub-models the builder makes from the recipe:

- :mod:`.vae`: ``VAE(encoder, decoder, kl_weight, reconstruction)`` (8.4), with
  ``build_encoder``/``build_decoder`` to put recipe layers around the latent heads;
- :mod:`.gan`: ``GAN(generator, discriminator, latent_dim, label_noise)`` (8.5), two optimizers;
- :mod:`.samples`: PNG grids of generated images, the VAE's latent grid and scatter, and the
  ``SampleImages`` callback;
- :mod:`.book`: the book's 8.4 and 8.5 architectures and settings (recipes, tests).

Nothing is imported here: the modules import Keras. A saved ``.keras`` file of a kind loads
once its module is imported — pass ``MODULES`` as ``plugins`` to
:func:`dlrun.model.saved.load_keras_model`.
"""

MODULES = ("dlrun.model.kinds.vae", "dlrun.model.kinds.gan")
