"""The whole service: set-up, security, faults, fuzzing, the reconciler, shutdown."""
