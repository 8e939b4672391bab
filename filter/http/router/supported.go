package router

import "github.com/straitproxy/strait/config"

// supported is what the router filter implements of its config:
// start_child_span; dynamic_stats is accepted and ignored (the
// per-status stats are always kept).
var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.http.router.v3.Router": `-dynamic_stats start_child_span`,
})
