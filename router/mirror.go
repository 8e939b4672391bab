package router

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
)

// MirrorPolicy is one request_mirror_policies entry: a copy of each
// request it samples goes, fire and forget, to its cluster.
type MirrorPolicy struct {
	// Cluster is the shadow cluster; "" when ClusterHeader names it.
	Cluster string
	// ClusterHeader is the request header whose first value names the
	// shadow cluster (cluster_header); no header, no copy.
	ClusterHeader string
	// TraceSampled is trace_sampled; nil inherits the parent's decision.
	// Strait does not trace (the connection manager refuses tracing), so
	// there is no span for it to sample, as in Envoy without a tracer.
	TraceSampled *bool
	// HostRewrite replaces the copy's :authority (host_rewrite_literal);
	// else "-shadow" is appended to its host unless NoShadowSuffix.
	HostRewrite    string
	NoShadowSuffix bool

	fraction   *typev3.FractionalPercent
	runtimeKey string
	rt         *config.Runtime
}

// Sampled reports whether the request with random number random is
// mirrored (runtime_fraction, absent: every request).
func (p *MirrorPolicy) Sampled(random uint64) bool {
	return p.fraction == nil || p.rt.Snapshot().FeatureEnabled(p.runtimeKey, p.fraction, random)
}

// ClusterFor returns the shadow cluster's name for a request ("": none).
func (p *MirrorPolicy) ClusterFor(h *protocol.Headers) string {
	if p.ClusterHeader == "" {
		return p.Cluster
	}
	v, _ := h.Get(p.ClusterHeader)
	return string(v)
}

// ShadowHost is the :authority the copy carries: host_rewrite_literal,
// else host with "-shadow" appended to its name (before any port), as
// Envoy's shadow writer does.
func (p *MirrorPolicy) ShadowHost(host []byte) string {
	switch {
	case p.HostRewrite != "":
		return p.HostRewrite
	case p.NoShadowSuffix || len(host) == 0:
		return string(host)
	}
	if i := portStart(host); i >= 0 {
		return string(host[:i]) + "-shadow" + string(host[i:])
	}
	return string(host) + "-shadow"
}

// compileMirrors compiles one level's request_mirror_policies.
func (c *compiler) compileMirrors(cfgs []*routev3.RouteAction_RequestMirrorPolicy, path string) ([]*MirrorPolicy, error) {
	var out []*MirrorPolicy
	for i, m := range cfgs {
		p := indexPath(path, "request_mirror_policies", i)
		mp := &MirrorPolicy{Cluster: m.GetCluster(), ClusterHeader: m.GetClusterHeader(),
			HostRewrite: m.GetHostRewriteLiteral(), NoShadowSuffix: m.GetDisableShadowHostSuffixAppend(), rt: c.rt}
		switch {
		case mp.Cluster != "" && mp.ClusterHeader != "":
			return nil, config.At(p, errors.New("only one of cluster and cluster_header may be set"))
		case mp.Cluster == "" && mp.ClusterHeader == "":
			return nil, config.At(p, errors.New("one of cluster and cluster_header is required"))
		case mp.ClusterHeader != "":
			// Header names are matched lowercase, as Envoy stores them.
			mp.ClusterHeader = strings.ToLower(mp.ClusterHeader)
			if err := validHeaderName(mp.ClusterHeader); err != nil {
				return nil, config.At(p+".cluster_header", err)
			}
		}
		if ts := m.GetTraceSampled(); ts != nil {
			v := ts.GetValue()
			mp.TraceSampled = &v
		}
		if rf := m.GetRuntimeFraction(); rf != nil {
			mp.fraction, mp.runtimeKey = rf.GetDefaultValue(), rf.GetRuntimeKey()
			if mp.fraction == nil {
				mp.fraction = &typev3.FractionalPercent{}
			}
		}
		out = append(out, mp)
	}
	return out, nil
}

// validHeaderName refuses a header name that no request can carry.
func validHeaderName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b <= ' ' || b >= 0x7f {
			return fmt.Errorf("%q is not a header name", name)
		}
	}
	return nil
}

// mostSpecificMirrors picks the policies of the most specific level that
// has any: route over virtual host over route configuration; levels are
// not merged (Envoy). The clusters they name are the table's (for
// validate_clusters): those of policies no route uses are not.
func (c *compiler) mostSpecificMirrors(levels ...[]*MirrorPolicy) []*MirrorPolicy {
	for _, l := range levels {
		if len(l) > 0 {
			for _, p := range l {
				if p.Cluster != "" {
					c.clusters[p.Cluster] = struct{}{}
				}
			}
			return l
		}
	}
	return nil
}
