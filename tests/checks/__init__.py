"""Tests of the check types."""
