"""Readers and writers of the official archive formats of each dataset."""
