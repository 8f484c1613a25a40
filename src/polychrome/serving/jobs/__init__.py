"""Background jobs: a persistent queue of job ids, leases on the Job table, worker processes."""
