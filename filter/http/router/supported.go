package router

import "github.com/straitproxy/strait/config"

// supported is what the router filter implements of its config: nothing
// but the defaults yet; decorative tracing and stats switches are ignored.
var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.http.router.v3.Router": `-dynamic_stats start_child_span`,
})
