"""Data: sources (readers), preprocessing, caching and LightningDataModules."""
