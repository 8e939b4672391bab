package router

import (
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/straitproxy/strait/filter"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.http.router"

func init() {
	filter.RegisterHTTP(Name, &routerv3.Router{}, func(_ *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(m.(*routerv3.Router))
	})
}
