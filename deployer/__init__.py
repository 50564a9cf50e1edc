"""deployer: declarative cron jobs, deployed and audited on local, SSH and Incus targets."""

__version__ = "0.1.0"
