"""Administration: the admin API and page, the CLI, monitoring and requeueing."""
