"""Outpost Functions: a serverless JupyterHub Outpost for the OutpostSpawner."""

import warnings

# Known and harmless third-party warnings, filtered here so that every process (outpost dev, the
# functions, the SSH daemon) prints our lines only. asyncssh names cryptography's DSA types when it
# is imported, and cryptography 51 deprecates DSA; neither the daemon nor the key tools use DSA keys.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
