"""What the user gave and what the node says: options, config file, detection, proxy settings."""
