// Package router compiles an Envoy v3 RouteConfiguration into an immutable
// Table and matches requests against it.
//
// Compile validates the configuration (the proto's generated ValidateAll,
// then our own semantic checks), rejects every field it does not implement
// with "<field path>: not supported yet", compiles all regular expressions
// and header-value formats once, and returns a Table that every stream shares
// through a pointer. Match picks the virtual host by :authority (exact
// domain, then the longest suffix wildcard, then the longest prefix wildcard,
// then "*") and returns the first route of that host whose match succeeds.
//
// The package is pure: it does no I/O except reading a direct_response body
// from its filename at compile time. A Route names clusters; it never holds
// cluster objects. Per-filter configuration is kept as opaque *anypb.Any
// values keyed by filter name, so this package never learns about filters.
//
// Imports: the standard library, the go-control-plane API types, protobuf
// and package protocol (for Headers). Nothing else from this repository may
// be imported here; router sits below proxy and the filters.
//
// Decisions where Envoy's behaviour is ambiguous or we differ on purpose are
// documented on the names they affect; the main ones:
//   - A HeaderMatcher or %REQ()% naming "host" reads :authority (Envoy keeps
//     HTTP/1 Host as :authority and a "host" matcher would never match).
//   - prefix_rewrite is accepted with every path specifier, as in Envoy: with
//     path and safe_regex matches it replaces the whole path before the query.
//   - A regex_rewrite substitution is checked at compile time: "\N" must name
//     an existing group and any other backslash escape except "\\" is an error.
//   - A domain with "*" anywhere but the first or last byte is an error.
package router
