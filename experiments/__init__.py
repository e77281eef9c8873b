"""Research diagnoses and sweeps: each is a script that writes a JSON result the docs cite."""
