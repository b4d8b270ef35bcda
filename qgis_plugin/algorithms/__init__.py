"""The Processing provider ``fastunetgeo`` and its algorithms (segment, vectorize, train)."""
