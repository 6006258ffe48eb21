"""The management API under /v0/management, and the `cliproxy` console command."""
