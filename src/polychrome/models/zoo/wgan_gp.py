"""WGAN-GP (Gulrajani et al. 2017): DCGAN-like G, a critic without batch norm, linear output.

The gradient penalty is the trainer's job (train_defaults gp_weight=10); the
network's part is a critic whose output for one sample does not depend on the
rest of the batch, hence layer norm (or none) instead of batch norm.
"""

from __future__ import annotations

import dataclasses

from ...errors import ModelError
from ..registry import register_model
from .common import NoiseGAN, train_defaults
from .dcgan import DCDiscriminator, DCGANConfig, DCGenerator


@dataclasses.dataclass
class WGANGPConfig(DCGANConfig):
    z_dim: int = 128
    critic_norm: str = "layer"  # layer | none

    def validate(self) -> None:
        super().validate()
        if self.critic_norm not in ("layer", "none"):
            raise ModelError("critic_norm must be 'layer' or 'none' (batch norm breaks the "
                             "per-sample gradient penalty)", code="bad_config")


@register_model("wgan-gp")
class WGANGP(NoiseGAN):
    config_class = WGANGPConfig
    # Paper settings: Adam(1e-4, beta1=0, beta2=0.9), 5 critic steps, lambda=10.
    train_defaults = train_defaults(loss="wgan", lr_g=1e-4, lr_d=1e-4, betas=[0.0, 0.9],
                                    n_critic=5, gp_weight=10.0, batch_size=64,
                                    cpu_channels_last=True)

    def __init__(self, config: WGANGPConfig):
        super().__init__(config)
        self.generator = DCGenerator(config)
        self.discriminator = DCDiscriminator(config, norm=config.critic_norm)
