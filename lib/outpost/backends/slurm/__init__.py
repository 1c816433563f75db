"""The Slurm backend: servers as batch jobs, through the Slurm commands or slurmrestd (docs/hpc.md)."""
