// Package extensions is the one list of compiled-in extensions: the
// binary (cmd/strait) and the end-to-end tests both import it, so they
// always run the same set. Adding an extension is one line here plus its
// own folder. Nothing but cmd and tests imports this package.
package extensions

import (
	_ "github.com/straitproxy/strait/examples/filters/headerecho"
	_ "github.com/straitproxy/strait/filter/http/cors"
	_ "github.com/straitproxy/strait/filter/http/fault"
	_ "github.com/straitproxy/strait/filter/http/grpcstats"
	_ "github.com/straitproxy/strait/filter/http/istioalpn"
	_ "github.com/straitproxy/strait/filter/http/localratelimit"
	_ "github.com/straitproxy/strait/filter/http/ondemand"
	_ "github.com/straitproxy/strait/filter/http/peermetadata"
	_ "github.com/straitproxy/strait/filter/http/rbac"
	_ "github.com/straitproxy/strait/filter/http/router"
	_ "github.com/straitproxy/strait/filter/listener/httpinspector"
	_ "github.com/straitproxy/strait/filter/listener/originaldst"
	_ "github.com/straitproxy/strait/filter/listener/rpcinspector"
	_ "github.com/straitproxy/strait/filter/listener/tlsinspector"
	_ "github.com/straitproxy/strait/filter/network/dubboproxy"
	_ "github.com/straitproxy/strait/filter/network/fault"
	_ "github.com/straitproxy/strait/filter/network/httpconnmgr"
	_ "github.com/straitproxy/strait/filter/network/localratelimit"
	_ "github.com/straitproxy/strait/filter/network/metadataexchange"
	_ "github.com/straitproxy/strait/filter/network/rbac"
	_ "github.com/straitproxy/strait/filter/network/tcpproxy"
	_ "github.com/straitproxy/strait/filter/upstream/metadataexchange"
	_ "github.com/straitproxy/strait/network/epoll"
	_ "github.com/straitproxy/strait/protocol/dubbo"
	_ "github.com/straitproxy/strait/protocol/http1"
	_ "github.com/straitproxy/strait/protocol/http2"
	_ "github.com/straitproxy/strait/tracing/opentelemetry"
	_ "github.com/straitproxy/strait/tracing/zipkin"
	_ "github.com/straitproxy/strait/transport/tlcp"
	_ "github.com/straitproxy/strait/transport/tls"
	_ "github.com/straitproxy/strait/upstream/lb/leastrequest"
	_ "github.com/straitproxy/strait/upstream/lb/random"
	_ "github.com/straitproxy/strait/upstream/lb/roundrobin"
)
