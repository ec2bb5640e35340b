"""Experiment scripts that use only minidl's public API."""
