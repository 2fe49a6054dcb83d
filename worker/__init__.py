"""Volunteer worker: identity, running work units, signing results."""
