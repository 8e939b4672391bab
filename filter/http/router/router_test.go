package router

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/straitproxy/strait/filter"
)

func TestBuild(t *testing.T) {
	tests := []struct {
		name    string
		cfg     *routerv3.Router
		wantErr string
	}{
		{name: "empty", cfg: &routerv3.Router{}},
		{name: "upstream log refused", cfg: &routerv3.Router{UpstreamLog: []*accesslogv3.AccessLog{{Name: "x"}}}, wantErr: "upstream_log: not supported yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := build(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var _ filter.Terminal = f
		})
	}
}
