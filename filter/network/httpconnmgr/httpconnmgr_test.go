package httpconnmgr

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// The router filter and the HTTP/1.1 codec are looked up by the
	// build, as in the binary.
	_ "github.com/straitproxy/strait/filter/http/router"
	_ "github.com/straitproxy/strait/protocol/http1"
	_ "github.com/straitproxy/strait/protocol/http2"
)

type clusters map[string]bool

func (c clusters) Known(name string) bool { return c[name] }

func (c clusters) Dynamic() bool { return false }

func (c clusters) Get(name string) (*upstream.Cluster, bool) {
	if c[name] {
		return &upstream.Cluster{Name: name}, true
	}
	return nil, false
}

const routerFilter = `
http_filters:
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`

const routes = `
route_config:
  virtual_hosts: [ { name: a, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: backend } } ] } ]`

func TestBuild(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"minimal", "stat_prefix: s" + routes + routerFilter, ""},
		{"http3 codec", "stat_prefix: s\ncodec_type: HTTP3" + routes + routerFilter, "codec_type: HTTP3 is not supported yet"},
		{"http2 codec", "stat_prefix: s\ncodec_type: HTTP2" + routes + routerFilter, ""},
		{"rds", "stat_prefix: s\nrds: { route_config_name: r, config_source: { ads: {} } }" + routerFilter, "rds: RDS needs dynamic_resources"},
		{"no filters", "stat_prefix: s" + routes, "http_filters: empty"},
		{"missing cluster", "stat_prefix: s\nroute_config: { virtual_hosts: [ { name: a, domains: ['*'], routes: [ { match: { prefix: '/' }, route: { cluster: nope } } ] } ] }" + routerFilter,
			`route_config: route names cluster "nope", which does not exist`},
		{"router not last", "stat_prefix: s" + routes + routerFilter + `
- name: second
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`, `http_filters[0]: filter "envoy.filters.http.router" is terminal and must be last`},
		{"bad route", "stat_prefix: s\nroute_config: { virtual_hosts: [ { name: a, domains: ['*'], routes: [ { match: { safe_regex: { regex: '(' } }, route: { cluster: backend } } ] } ] }" + routerFilter, "route_config:"},
		{"access log", "stat_prefix: s\naccess_log: [ { name: x } ]" + routes + routerFilter, "access_log[0].typed_config: required"},
		{"access log format", "stat_prefix: s\naccess_log: [ { name: x, typed_config: { '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: { text_format: '%NOPE%' } } } ]" + routes + routerFilter,
			"access_log[0].typed_config.log_format.text_format: format \"%NOPE%\" at position 0: unknown command operator %NOPE%"},
		{"access log filter", "stat_prefix: s\naccess_log: [ { name: x, filter: { header_filter: { header: { name: a } } }, typed_config: { '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog } } ]" + routes + routerFilter,
			"access_log[0].filter.header_filter: not supported yet"},
		{"trusted hops", "stat_prefix: s\nxff_num_trusted_hops: 1" + routes + routerFilter, "xff_num_trusted_hops: only 0 is supported yet"},
		{"no trusted hops", "stat_prefix: s\nxff_num_trusted_hops: 0\ndrain_timeout: 1s" + routes + routerFilter, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, bc := parseHCM(t, tc.yaml)
			ext, ok := config.ByName(config.NetworkFilter, Name)
			if !ok {
				t.Fatal("not registered")
			}
			_, err := ext.Factory.(filter.NetworkBuilder)(bc, m)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRequestHeadersTimeoutDefault: 10 s unless set; 0s turns it off.
func TestRequestHeadersTimeoutDefault(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 10 * time.Second, "\nrequest_headers_timeout: 0s": 0, "\nrequest_headers_timeout: 2s": 2 * time.Second} {
		m, bc := parseHCM(t, "stat_prefix: s"+in+routes+routerFilter)
		cfg, err := build(bc, m)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Codecs.RequestHeadersTimeout; got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

// parseHCM decodes a connection manager from YAML, with a build context
// that knows the cluster "backend".
func parseHCM(t *testing.T, y string) (*hcmv3.HttpConnectionManager, *filter.BuildContext) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var m hcmv3.HttpConnectionManager
	if err := protojson.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	return &m, &filter.BuildContext{Clusters: clusters{"backend": true}, Stats: stats.NewStore().Root(),
		Pool: network.NewPool(4), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestAdoptNeedsHTTP1: a migrated idle connection is HTTP/1.1, so only a
// manager whose codec takes HTTP/1.1 (HTTP1, AUTO) resumes it; HTTP2
// refuses it (the previous process serves it on).
func TestAdoptNeedsHTTP1(t *testing.T) {
	for codec, resumes := range map[string]bool{"AUTO": true, "HTTP1": true, "HTTP2": false} {
		m, bc := parseHCM(t, "stat_prefix: s\ncodec_type: "+codec+routes+routerFilter)
		ext, _ := config.ByName(config.NetworkFilter, Name)
		nf, err := ext.Factory.(filter.NetworkBuilder)(bc, m)
		if err != nil {
			t.Fatal(err)
		}
		f := nf.(*Factory)
		if f.cfg.Codec.Resumes != resumes {
			t.Errorf("%s: codec %s Resumes = %v", codec, f.cfg.Codec.Name, f.cfg.Codec.Resumes)
		}
		if !resumes {
			if _, err := f.Adopt(nil, &network.Handoff{Filter: Name}); err == nil || !strings.Contains(err.Error(), "cannot resume") {
				t.Errorf("%s: Adopt: %v", codec, err)
			}
		}
	}
}
