"""candidate_gen."""
