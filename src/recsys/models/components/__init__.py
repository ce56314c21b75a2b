"""Plain ``nn.Module`` encoders: no config objects, no datasets in their constructors."""
