// Package config loads the Envoy v3 Bootstrap from YAML or JSON, turns the
// generated validation errors into field paths, and holds the extension
// registry: the table from a typed_config type URL to the extension that
// builds it. Extensions fill it from their init(); nothing here knows any
// extension by name. config imports only the API types and the standard
// library.
package config
