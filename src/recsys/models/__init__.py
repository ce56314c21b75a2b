"""Models: plain nn.Module encoders in ``components/`` and the LightningModules that train them."""
