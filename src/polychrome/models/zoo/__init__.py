"""Built-in architectures; each module registers its model on import."""

from . import cgan, cyclegan, dcgan, mlp_gan, pix2pix, sngan, stargan, stylegan, wgan_gp  # noqa: F401
