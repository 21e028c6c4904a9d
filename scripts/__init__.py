"""Install-time helpers; importable so tests can check what they pin."""
