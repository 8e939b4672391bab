// Package tlsconfig holds what TLS needs from configuration: the secret
// store (static secrets and SDS) today; TLS and TLCP contexts and
// certificate selection join it with the transport sockets. It imports
// only config, the API types and the standard library.
package tlsconfig
