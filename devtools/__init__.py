"""Developer tools that ship with the repository, not the package: the local S3 server the tests and
`make demo` start, and the demo driver."""
