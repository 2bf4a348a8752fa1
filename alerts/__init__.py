"""Alerting: lifecycle, routing, suppression, outbox and notifiers."""
