"""The held-out judge (trained / unseen / out-of-domain sets, paired bootstrap) and its report."""
