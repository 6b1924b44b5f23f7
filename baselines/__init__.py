"""What proxies are measured against: stability-based memorization and published score files."""
