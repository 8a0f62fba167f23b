// property tests: written separately
