"""Python clients of the REST APIs."""
