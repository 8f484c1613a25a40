"""Class-conditional GAN: ResNet G with conditional BatchNorm + projection D with spectral norm.

Miyato & Koyama 2018 ("cGANs with Projection Discriminator"): the style label
scales and shifts every generator BatchNorm and enters D as an inner product
between a label embedding and D's pooled features. With one style it reduces to
SNGAN with learned BN affine parameters.
"""

from __future__ import annotations

import dataclasses

from ..registry import register_model
from .common import NoiseGAN, train_defaults
from .sngan import ResNetConfig, ResNetDiscriminator, ResNetGenerator


@dataclasses.dataclass
class CGANConfig(ResNetConfig):
    pass


@register_model("cgan")
class CGAN(NoiseGAN):
    config_class = CGANConfig
    # Equal learning rates: with SNGAN's TTUR (1e-4 / 4e-4) D outpaced the conditional-BN
    # generator and the styles were learnt much later in short runs.
    train_defaults = train_defaults(loss="hinge", lr_g=2e-4, lr_d=2e-4, betas=[0.0, 0.9],
                                    n_critic=1, batch_size=64, diffaugment="color,translation",
                                    cpu_channels_last=True)

    def __init__(self, config: CGANConfig):
        super().__init__(config)
        self.generator = ResNetGenerator(config, conditioning="cbn")
        self.discriminator = ResNetDiscriminator(config, sn=True)
