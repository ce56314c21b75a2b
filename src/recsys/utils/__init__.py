"""Glue between Hydra configs and Lightning objects."""
