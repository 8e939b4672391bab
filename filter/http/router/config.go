package router

import (
	"fmt"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/straitproxy/strait/config"
)

// build checks the options we do not honour yet, so that none is ignored
// silently.
func build(cfg *routerv3.Router) (*Factory, error) {
	switch {
	case len(cfg.GetUpstreamHttpFilters()) > 0:
		return nil, config.At("upstream_http_filters", fmt.Errorf("not supported yet"))
	case len(cfg.GetUpstreamLog()) > 0:
		return nil, config.At("upstream_log", fmt.Errorf("not supported yet"))
	}
	if err := supported.Check(cfg); err != nil {
		return nil, err
	}
	return &Factory{cfg: cfg}, nil
}
